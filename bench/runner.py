"""Runs every workload against one proxy + handler service pair and collects the figures."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench.load import Client, Run
from bench.procs import (
    HOST,
    ROOT,
    CpuMeter,
    Proc,
    free_port,
    rss_kib,
    start_handler,
    start_proxy,
    wait_for_quiet,
)

__all__ = ["SIZES", "Size", "git_rev", "run_benchmark"]


@dataclass(frozen=True)
class Size:
    """How much of each workload to run."""

    name: str
    latency_counts: tuple[int, int, int]  # trivial, 10-step, 100-step requests at c=1
    floor_latency_counts: tuple[int, int, int]
    throughput_seconds: float
    warmup_seconds: float
    big_runs: int  # 1,000-step invocations timed
    resume_runs: int  # crash + resume of a 1,000-step journal
    suspended_count: int  # invocations suspended in ctx.sleep for the RSS figure


SIZES = {
    "tiny": Size("tiny", (60, 30, 5), (60, 30, 5), 0.6, 0.3, 1, 1, 200),
    "full": Size("full", (2000, 1000, 200), (2000, 1000, 500), 5.0, 1.0, 10, 5, 10_000),
}

CONCURRENCIES = (16, 64)
#: Longest wait for every sleeper to be suspended before its RSS is read anyway.
SUSPEND_WAIT = 120.0
BIG = 1000


def _steps_body(n: int) -> bytes:
    return str(n).encode()


class _Bench:
    def __init__(self, size: Size, client: Client, proxy: Proc, ingress: str, admin: str, handler: str) -> None:
        self.size = size
        self.admin = admin
        self.client = client
        self.proxy = proxy
        self.ingress = ingress  # http://127.0.0.1:port
        self.handler = handler
        self.figures: dict[str, Any] = {}

    def proxy_url(self, workload: str) -> tuple[str, bytes]:
        if workload == "trivial":
            return f"{self.ingress}/Bench/trivial", b'"hello"'
        return f"{self.ingress}/Bench/steps", _steps_body(int(workload))

    def floor_url(self, workload: str) -> tuple[str, bytes]:
        if workload == "trivial":
            return f"{self.handler}/plain/trivial", b'"hello"'
        return f"{self.handler}/plain/steps", _steps_body(int(workload))

    async def check(self, run: Run, what: str) -> Run:
        if run.errors or not run.requests:
            raise RuntimeError(f"{what}: {run.errors} errors, {run.requests} ok; first: {run.first_error}")
        return run

    async def warm(self) -> None:
        for workload in ("trivial", "10", "100"):
            for url, body in (self.proxy_url(workload), self.floor_url(workload)):
                await self.check(await self.client.run(url, body, 4, count=20), f"warm-up {url}")

    async def latency(self) -> None:
        size = self.size
        for (workload, n_proxy), n_floor in zip(
            zip(("trivial", "10", "100"), size.latency_counts, strict=True), size.floor_latency_counts, strict=True
        ):
            url, body = self.proxy_url(workload)
            proxied = await self.check(await self.client.run(url, body, 1, count=n_proxy), f"latency {workload}")
            url, body = self.floor_url(workload)
            floor = await self.check(await self.client.run(url, body, 1, count=n_floor), f"floor {workload}")
            self.figures[f"latency_{workload}"] = {
                "proxy": {"p50_ms": proxied.p(0.5), "p99_ms": proxied.p(0.99), "n": proxied.requests},
                "floor": {"p50_ms": floor.p(0.5), "p99_ms": floor.p(0.99), "n": floor.requests},
            }

    async def throughput(self) -> None:
        size = self.size
        for workload in ("trivial", "10"):
            steps = 0 if workload == "trivial" else int(workload)
            for concurrency in CONCURRENCIES:
                row: dict[str, Any] = {}
                for side, (url, body) in (("proxy", self.proxy_url(workload)), ("floor", self.floor_url(workload))):
                    run = await self.check(
                        await self.client.run(
                            url, body, concurrency, seconds=size.throughput_seconds, warmup=size.warmup_seconds
                        ),
                        f"throughput {workload} c={concurrency} {side}",
                    )
                    row[side] = {
                        "inv_per_s": run.rate,
                        "steps_per_s": run.rate * steps,
                        "p50_ms": run.p(0.5),
                        "p99_ms": run.p(0.99),
                        "n": run.requests,
                    }
                self.figures[f"throughput_{workload}_c{concurrency}"] = row

    async def cost_curve(self) -> None:
        url, body = f"{self.ingress}/Bench/steps", _steps_body(BIG)
        run = await self.check(await self.client.run(url, body, 1, count=self.size.big_runs), "1,000-step")
        self.figures["cost_1000"] = {"median_ms": statistics.median(run.latencies) * 1000, "n": run.requests}

    async def resume(self) -> None:
        url = f"{self.ingress}/Bench/crash_once"
        times: list[float] = []
        for _ in range(self.size.resume_runs):
            status, body = await self.client.post(url, _steps_body(BIG))
            received = time.time()
            if status != 200:
                raise RuntimeError(f"crash_once answered {status}: {body[:300]!r}")
            result = msgspec.json.decode(body)
            times.append((received - float(result["crashed_at"])) * 1000)
        self.figures["resume_1000"] = {"median_ms": statistics.median(times), "all_ms": times}

    def memory(self) -> None:
        self.figures["proxy_rss"] = _mib(rss_kib(self.proxy.pid))

    async def suspended(self) -> None:
        """Proxy RSS once `suspended_count` invocations sleep (suspended, an hour-long ctx.sleep)."""
        from handlers_sdk import Context

        if not hasattr(Context, "sleep"):
            self.figures["suspended_rss"] = None
            return
        target = self.size.suspended_count
        url = f"{self.ingress}/Bench/sleeper/send"
        sent = await self.check(await self.client.run(url, b"", 64, count=target, ok_status=202), "sleeper sends")
        began = time.monotonic()
        suspended = 0
        while time.monotonic() < began + SUSPEND_WAIT:
            status, body = await self.client.get(f"{self.admin}/stats")
            stats: dict[str, Any] = msgspec.json.decode(body) if status == 200 else {}
            suspended = stats.get("counts", {}).get("timers", 0)
            if suspended >= target and stats.get("running_attempts", 1) == 0:
                break
            await asyncio.sleep(0.1)
        # Not all suspended in time is a figure too (shown in the table), not a crash of the run.
        self.figures["suspended_rss"] = {
            "count": sent.requests,
            "suspended": suspended,
            "send_per_s": sent.rate,
            "settle_seconds": time.monotonic() - began,
            **_mib(rss_kib(self.proxy.pid)),
        }


def _mib(kib: dict[str, int]) -> dict[str, float]:
    return {f"{name}_mib": value / 1024 for name, value in kib.items()}


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True,
            timeout=5,
        )  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


async def _measure(size: Size, bench_args: dict[str, Any]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="durable-proxy-bench-"))
    handler_port, ingress_port, admin_port = free_port(), free_port(), free_port()
    procs: list[Proc] = []
    client: Client | None = None
    keep = False
    try:
        handler = start_handler(handler_port, work)
        procs.append(handler)
        proxy = start_proxy(
            ingress_port, admin_port, handler_port, work / "data", work, bench_args.get("transport", "aiohttp")
        )
        procs.append(proxy)
        client = Client(max_connections=max(CONCURRENCIES) * 2)
        bench = _Bench(
            size, client, proxy, f"http://{HOST}:{ingress_port}", f"http://{HOST}:{admin_port}",
            f"http://{HOST}:{handler_port}",
        )  # fmt: skip
        await bench.warm()
        meter = CpuMeter([proxy.pid, handler.pid])
        await bench.latency()
        await bench.throughput()
        await bench.cost_curve()
        await bench.resume()
        bench.memory()
        cpu = meter.stop()
        bench.figures["cpu"] = {
            "proxy_cpus": cpu[f"pid_{proxy.pid}_cpus"],
            "handler_cpus": cpu[f"pid_{handler.pid}_cpus"],
            "ours_cpus": cpu["ours_cpus"],
            "others_cpus": cpu["others_cpus"],
            "seconds": cpu["wall_seconds"],
        }
        await bench.suspended()
        return bench.figures
    except Exception:
        for proc in procs:
            code = proc.popen.poll()
            state = "running" if code is None else f"exited with {code}"
            sys.stderr.write(f"--- {proc.name} ({state}) log ---\n{proc.tail()}\n")
        keep = True
        raise
    finally:
        if client is not None:
            await client.close()
        for proc in reversed(procs):
            proc.stop()
        if keep:
            sys.stderr.write(f"logs and data kept in {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(size_name: str, transport: str = "aiohttp", quiet_wait: float = 0.0) -> dict[str, Any]:
    """Run every workload at `size_name` and return the figures with the environment.

    With `quiet_wait`, first wait up to that many seconds for other processes to go quiet.
    """
    size = SIZES[size_name]
    busy_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else None
    try:
        import uvloop

        figures = uvloop.run(_measure(size, {"transport": transport}))
    except ImportError:  # pragma: no cover
        figures = asyncio.run(_measure(size, {"transport": transport}))
    return {
        "size": size.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git": git_rev(),
            "transport": transport,
            "load_generator": "aiohttp",
            "busy_before": busy_before,
        },
        "figures": figures,
    }
