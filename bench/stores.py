"""``python -m bench --stores``: the workloads of the table on LMDB x1, PostgreSQL x1, x2 and x3, and a
failover time (issue 12's "Performance").

One handler service (bench/handlers.py) is shared by every proxy of every setup; the load goes
round-robin over the proxies' ingress ports, request by request. Each PostgreSQL setup gets a
fresh database of one private cluster (fsync on), so none starts with the journal of another.

Around every throughput workload the CPU time of each proxy, of the handler service, of the
PostgreSQL cluster (the postmaster and every process under it) and of this process (the load
generator) is read from /proc at the start and the end of the measured window, and divided by the
steps completed in that window (invocations for the trivial workload): CPU seconds per step, so
that what a bigger machine would do can be computed from this 2-core one.

The failover: three proxies on a fresh database with ``--lease-time``, a steady trickle of
10-step invocations (``send``, round-robin), SIGKILL of the proxy that owns the most partitions,
then the time from the kill to the first completion (its ``completed_ms``, written by a survivor)
of an invocation that was accepted before the kill in a partition the killed proxy owned.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from bench.cluster import (
    Node,
    machine_seconds,
    owned_partitions,
    read_views,
    split_problems,
    start_nodes,
    start_postgres,
    tree_cpu_seconds,
    wait_split,
)
from bench.load import Client, Run
from bench.procs import HOST, Proc, free_port, rss_kib, start_handler, wait_for_quiet
from bench.runner import SIZES, Size, git_rev
from durable_core.partitions import partition_of

if TYPE_CHECKING:
    from tests.postgres import PgCluster

__all__ = [
    "FAILOVER_SIZES",
    "SETUPS",
    "CpuSample",
    "FailoverSize",
    "Setup",
    "cpu_figures",
    "log_problems",
    "postgres_log_summary",
    "run_stores",
    "take_sample",
]

PARTITIONS = 16
CONCURRENCIES = (16, 64)
BIG = 1000


@dataclass(frozen=True)
class Setup:
    """One column of the table: a store and how many proxies share it."""

    key: str
    label: str
    postgres: bool
    proxies: int


SETUPS = (
    Setup("lmdb_1", "LMDB x1", False, 1),
    Setup("pg_1", "PostgreSQL x1", True, 1),
    Setup("pg_2", "PostgreSQL x2", True, 2),
    Setup("pg_3", "PostgreSQL x3", True, 3),
)


@dataclass(frozen=True)
class FailoverSize:
    """How long the failover trickle runs, and how fast."""

    before_seconds: float  # trickle before the kill
    after_seconds: float  # trickle on the survivors once they own every partition
    rate: float  # invocations sent per second, round-robin
    step_ms: int  # each of the 10 steps sleeps this long in an invocation's first attempt


FAILOVER_SIZES = {"tiny": FailoverSize(1.0, 0.5, 30.0, 30), "full": FailoverSize(5.0, 2.0, 40.0, 50)}


# -- CPU accounting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds of the measured processes at one instant."""

    wall: float  # time.monotonic()
    machine_busy: float  # every CPU of the machine, busy seconds since boot
    proxies: tuple[float, ...]
    handler: float
    postgres: float | None  # None: no PostgreSQL in this setup
    load: float  # this process (the load generator)


def take_sample(proxies: list[int], handler: int, postmaster: int | None, proc: Path = Path("/proc")) -> CpuSample:
    """Read every process tree once (one scan of `proc`)."""
    roots = [*proxies, handler, *([postmaster] if postmaster is not None else [])]
    trees = tree_cpu_seconds(roots, proc)
    own = os.times()
    return CpuSample(
        wall=time.monotonic(),
        machine_busy=machine_seconds(proc)[0],
        proxies=tuple(trees[pid] for pid in proxies),
        handler=trees[handler],
        postgres=trees[postmaster] if postmaster is not None else None,
        load=own.user + own.system,
    )


def cpu_figures(before: CpuSample, after: CpuSample, units: int) -> dict[str, Any]:
    """What each process used between two samples: seconds, CPUs (seconds / wall) and
    milliseconds per unit (a step, or an invocation of the trivial workload).

    ``others_s`` is the rest of the machine's busy time (other processes: a busy machine).
    """
    wall = after.wall - before.wall
    proxies = [b - a for a, b in zip(before.proxies, after.proxies, strict=True)]
    postgres = after.postgres - before.postgres if after.postgres is not None and before.postgres is not None else None
    handler = after.handler - before.handler
    load = after.load - before.load
    ours = sum(proxies) + handler + load + (postgres or 0.0)
    others = max(0.0, (after.machine_busy - before.machine_busy) - ours)

    def per_unit(seconds: float | None) -> float | None:
        return None if seconds is None or units <= 0 else seconds / units * 1000

    def cpus(seconds: float | None) -> float | None:
        return None if seconds is None or wall <= 0 else seconds / wall

    return {
        "wall_s": wall,
        "units": units,
        "proxies_s": proxies,
        "proxies_sum_s": sum(proxies),
        "postgres_s": postgres,
        "handler_s": handler,
        "load_s": load,
        "others_s": others,
        "ms_per_unit": {
            "proxies_sum": per_unit(sum(proxies)),
            "proxies": [per_unit(p) for p in proxies],
            "postgres": per_unit(postgres),
            "handler": per_unit(handler),
        },
        "cpus": {
            "proxies_sum": cpus(sum(proxies)),
            "postgres": cpus(postgres),
            "handler": cpus(handler),
            "load": cpus(load),
            "others": cpus(others),
        },
    }


# -- one setup ----------------------------------------------------------------------------------------


def _check(run: Run, what: str) -> Run:
    if run.errors or not run.requests:
        raise RuntimeError(f"{what}: {run.errors} errors, {run.requests} ok; first: {run.first_error}")
    return run


#: Log lines the benchmark causes on purpose (``crash_once``'s first attempt).
_EXPECTED = ("simulated crash after the last step",)


def log_problems(text: str) -> list[str]:
    """The lines of a proxy log at level error or critical (JSON lines), or that show a traceback
    or say ERROR (other lines), leaving out what the benchmark provokes on purpose."""
    found: list[str] = []
    for line in text.splitlines():
        if any(expected in line for expected in _EXPECTED):
            continue
        if line.startswith("{"):
            try:
                level = str(msgspec.json.decode(line).get("level", "")).lower()
            except (msgspec.DecodeError, AttributeError):
                level = ""
            if level in ("error", "critical"):
                found.append(line[:400])
        elif "Traceback" in line or "ERROR" in line or "CRITICAL" in line:
            found.append(line[:400])
    return found


def log_warnings(text: str) -> dict[str, int]:
    """Warning lines of a JSON proxy log by the start of their message (60 characters) -> count,
    leaving out what the benchmark provokes on purpose."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("{") or any(expected in line for expected in _EXPECTED):
            continue
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue
        if isinstance(record, dict) and str(record.get("level", "")).lower() == "warning":
            key = f"{record.get('logger', '?')}: {str(record.get('message', ''))[:60]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _log_warnings(nodes: list[Node]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for node in nodes:
        try:
            counts = log_warnings(node.proc.log_path.read_text(errors="replace"))
        except OSError:
            continue
        if counts:
            found[node.name] = counts
    return found


def _log_problems(nodes: list[Node]) -> dict[str, list[str]]:
    """node name -> its log's problem lines (`log_problems`), at most 20; nodes without any left out."""
    found: dict[str, list[str]] = {}
    for node in nodes:
        try:
            bad = log_problems(node.proc.log_path.read_text(errors="replace"))
        except OSError:
            continue
        if bad:
            found[node.name] = bad[:20]
    return found


def postgres_log_summary(text: str) -> dict[str, int]:
    """``ERROR:``/``FATAL:``/``PANIC:`` messages of a PostgreSQL log -> how many times each (the
    statement that failed, from the ``STATEMENT:`` line after it, cut to 80 characters)."""
    counts: dict[str, int] = {}
    last: str | None = None
    for line in text.splitlines():
        for level in ("ERROR:", "FATAL:", "PANIC:"):
            if level in line:
                last = f"{level} {line.split(level, 1)[1].strip()}"
                counts[last] = counts.get(last, 0) + 1
                break
        else:
            if last is not None and "STATEMENT:" in line:
                key = f"{last} [{line.split('STATEMENT:', 1)[1].strip()[:80]}]"
                counts[last] -= 1
                if not counts[last]:
                    del counts[last]
                counts[key] = counts.get(key, 0) + 1
            last = None
    return counts


class _SetupBench:
    def __init__(self, size: Size, client: Client, nodes: list[Node], handler: Proc, postmaster: int | None) -> None:
        self.size = size
        self.client = client
        self.nodes = nodes
        self.handler = handler
        self.postmaster = postmaster
        self.figures: dict[str, Any] = {}

    def urls(self, path: str) -> list[str]:
        return [f"{node.ingress}/Bench/{path}" for node in self.nodes]

    def sample(self) -> CpuSample:
        return take_sample([n.proc.pid for n in self.nodes], self.handler.pid, self.postmaster)

    async def warm(self) -> None:
        for path, body in (("trivial", b'"hello"'), ("steps", b"10"), ("steps", b"100")):
            for url in self.urls(path):
                _check(await self.client.run(url, body, 4, count=20), f"warm-up {url}")

    async def latency(self) -> None:
        for (workload, path, body), count in zip(
            (("trivial", "trivial", b'"hello"'), ("10", "steps", b"10"), ("100", "steps", b"100")),
            self.size.latency_counts,
            strict=True,
        ):
            run = _check(await self.client.run(self.urls(path), body, 1, count=count), f"latency {workload}")
            self.figures[f"latency_{workload}"] = {"p50_ms": run.p(0.5), "p99_ms": run.p(0.99), "n": run.requests}
        hundred, trivial = self.figures["latency_100"]["p50_ms"], self.figures["latency_trivial"]["p50_ms"]
        self.figures["durable_step_ms"] = (hundred - trivial) / 100

    async def throughput(self) -> None:
        size = self.size
        for workload, path, body, steps in (("trivial", "trivial", b'"hello"', 0), ("10", "steps", b"10", 10)):
            for concurrency in CONCURRENCIES:
                samples: list[CpuSample] = []

                async def meter(samples: list[CpuSample]) -> None:
                    await asyncio.sleep(size.warmup_seconds)
                    samples.append(self.sample())
                    await asyncio.sleep(size.throughput_seconds)
                    samples.append(self.sample())

                run, _ = await asyncio.gather(
                    self.client.run(
                        self.urls(path), body, concurrency, seconds=size.throughput_seconds, warmup=size.warmup_seconds
                    ),
                    meter(samples),
                )
                _check(run, f"throughput {workload} c={concurrency}")
                units = run.requests * steps if steps else run.requests
                self.figures[f"throughput_{workload}_c{concurrency}"] = {
                    "inv_per_s": run.rate,
                    "steps_per_s": run.rate * steps,
                    "p50_ms": run.p(0.5),
                    "p99_ms": run.p(0.99),
                    "n": run.requests,
                    "cpu": cpu_figures(samples[0], samples[1], units),
                }

    async def resume(self) -> None:
        times: list[float] = []
        for n in range(self.size.resume_runs):
            url = self.urls("crash_once")[n % len(self.nodes)]
            status, body = await self.client.post(url, str(BIG).encode())
            received = time.time()
            if status != 200:
                raise RuntimeError(f"crash_once answered {status}: {body[:300]!r}")
            times.append((received - float(msgspec.json.decode(body)["crashed_at"])) * 1000)
        self.figures["resume_1000"] = {"median_ms": statistics.median(times), "all_ms": times}

    def memory(self) -> None:
        self.figures["proxy_rss_mib"] = [
            {f"{name}_mib": value / 1024 for name, value in rss_kib(node.proc.pid).items()} for node in self.nodes
        ]


async def _measure_setup(
    setup: Setup, size: Size, client: Client, work: Path, handler: Proc, handler_port: int, transport: str,
    pg: PgCluster | None,
) -> dict[str, Any]:  # fmt: skip
    store = pg.fresh_database(f"bench_{setup.key}") if setup.postgres and pg is not None else None
    nodes = start_nodes(
        setup.proxies, handler_port, work, transport, store=store, partitions=PARTITIONS if store else None,
        prefix=f"{setup.key}_p",
    )  # fmt: skip
    try:
        if store is not None:
            await wait_split(client, nodes, PARTITIONS)
        bench = _SetupBench(size, client, nodes, handler, pg.postmaster_pid() if store and pg else None)
        await bench.warm()
        await bench.latency()
        await bench.throughput()
        await bench.resume()
        bench.memory()
        bench.figures["log_problems"] = _log_problems(nodes)
        bench.figures["log_warnings"] = _log_warnings(nodes)
        return bench.figures
    except Exception:
        for node in nodes:
            code = node.proc.popen.poll()
            sys.stderr.write(f"--- {node.proc.name} ({'running' if code is None else code}) ---\n{node.proc.tail()}\n")
        raise
    finally:
        for node in nodes:
            node.proc.stop()


# -- failover -----------------------------------------------------------------------------------------


async def _completion_times(client: Client, nodes: list[Node], ids: list[str], timeout: float) -> dict[str, int | None]:
    """invocation id -> its ``completed_ms`` (None if not completed within `timeout`), read from
    the admin APIs of `nodes` (in turn)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done: dict[str, int | None] = dict.fromkeys(ids)
    turn = 0
    while loop.time() < deadline:
        pending = [inv for inv, ms in done.items() if ms is None]
        if not pending:
            break
        for start in range(0, len(pending), 16):
            chunk = pending[start : start + 16]
            turn += 1
            node = nodes[turn % len(nodes)]
            answers = await asyncio.gather(
                *(client.get(f"{node.admin}/invocations/{inv}") for inv in chunk), return_exceptions=True
            )
            for inv, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, BaseException) or answer[0] != 200:
                    continue
                view = msgspec.json.decode(answer[1])
                if view.get("status") == "completed" and view.get("completed_ms"):
                    done[inv] = int(view["completed_ms"])
        await asyncio.sleep(0.1)
    return done


async def _failover(
    size_name: str, client: Client, work: Path, handler_port: int, transport: str, pg: PgCluster, lease_time: float
) -> dict[str, Any]:
    fsize = FAILOVER_SIZES[size_name]
    store = pg.fresh_database("bench_failover")
    nodes = start_nodes(
        3, handler_port, work, transport, store=store, lease_time=lease_time, partitions=PARTITIONS, prefix="failover_p"
    )
    loop = asyncio.get_running_loop()
    try:
        await wait_split(client, nodes, PARTITIONS)
        alive = list(nodes)
        body = msgspec.json.encode([10, fsize.step_ms])
        accepted: list[tuple[str, float, str]] = []  # (id, wall ms when the 202 arrived, node name)
        refused = {"before_kill": 0, "after_kill": 0}
        first_refusal: list[str] = []
        killed_ms = [0.0]
        tasks: set[asyncio.Task[None]] = set()

        async def send_one(node: Node) -> None:
            try:
                status, answer = await client.post(f"{node.ingress}/Bench/paced_steps/send", body)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status, answer = 0, repr(exc).encode()
            if status == 202:
                accepted.append((msgspec.json.decode(answer)["invocationId"], time.time() * 1000, node.name))
                return
            refused["after_kill" if killed_ms[0] else "before_kill"] += 1
            if not first_refusal:
                first_refusal.append(f"{node.name}: HTTP {status} {answer[:200]!r}")

        stop = asyncio.Event()

        async def trickle() -> None:
            turn = 0
            due = loop.time()
            while not stop.is_set():
                task = asyncio.create_task(send_one(alive[turn % len(alive)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                turn += 1
                due += 1 / fsize.rate
                await asyncio.sleep(max(0.0, due - loop.time()))

        trickler = asyncio.create_task(trickle())
        await asyncio.sleep(fsize.before_seconds)
        owned = owned_partitions(await read_views(client, nodes))
        victim = max(nodes, key=lambda n: len(owned.get(n.name, ())))
        victim_partitions = owned.get(victim.name, set())
        alive.remove(victim)  # the trickle goes on over the survivors
        killed_ms[0] = time.time() * 1000
        killed = loop.time()
        victim.proc.kill()
        takeover: float | None = None
        while loop.time() < killed + lease_time + 20:
            if not split_problems(owned_partitions(await read_views(client, alive)), PARTITIONS):
                takeover = loop.time() - killed
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(fsize.after_seconds)
        stop.set()
        await trickler
        if tasks:
            await asyncio.gather(*tasks)
        theirs = [(inv, at) for inv, at, _ in accepted if partition_of(inv, PARTITIONS) in victim_partitions]
        completed = await _completion_times(client, alive, [inv for inv, _ in theirs], timeout=lease_time + 30)
        before = {inv for inv, at in theirs if at <= killed_ms[0]}
        in_flight = [ms for inv, ms in completed.items() if inv in before and ms is not None and ms > killed_ms[0]]
        after_kill = [ms for ms in completed.values() if ms is not None and ms > killed_ms[0]]

        def since_kill(ms: float | None) -> float | None:
            return None if ms is None else (ms - killed_ms[0]) / 1000

        return {
            "lease_time_s": lease_time,
            "target_s": lease_time + 1.0,
            "partitions": PARTITIONS,
            "victim": victim.name,
            "victim_partitions": sorted(victim_partitions),
            "trickle_per_s": fsize.rate,
            "step_ms_first_attempt": fsize.step_ms,
            "accepted": len(accepted),
            "refused": refused,
            "first_refusal": first_refusal[0] if first_refusal else "",
            "victim_owned": len(theirs),
            "in_flight_at_kill": len(in_flight),
            "accepted_before_kill_not_done": sum(1 for inv in before if (completed[inv] or 0) > killed_ms[0]),
            "never_completed": sorted(inv for inv, ms in completed.items() if ms is None)[:20],
            "takeover_s": takeover,
            "failover_s": since_kill(min(in_flight) if in_flight else None),
            "last_in_flight_s": since_kill(max(in_flight) if in_flight else None),
            "first_victim_owned_s": since_kill(min(after_kill) if after_kill else None),
            "log_problems": _log_problems(nodes),
            "log_warnings": _log_warnings(nodes),
        }
    finally:
        for node in nodes:
            node.proc.stop()


# -- the whole run ------------------------------------------------------------------------------------


async def _measure(size: Size, transport: str, lease_time: float, failover: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="durable-proxy-bench-stores-"))
    pg, why = start_postgres()
    if pg is None:
        sys.stderr.write(f"PostgreSQL rows skipped: {why}\n")
    handler_port = free_port()
    handler: Proc | None = None
    client = Client(max_connections=max(CONCURRENCIES) * 4)
    keep = False
    figures: dict[str, Any] = {"setups": {}, "skipped": {}}
    try:
        handler = start_handler(handler_port, work)
        for setup in SETUPS:
            if setup.postgres and pg is None:
                figures["skipped"][setup.key] = why
                continue
            sys.stderr.write(f"measuring {setup.label} ...\n")
            figures["setups"][setup.key] = await _measure_setup(
                setup, size, client, work, handler, handler_port, transport, pg
            )
        if failover and pg is not None:
            sys.stderr.write(f"failover with a {lease_time:g} s lease ...\n")
            figures["failover"] = await _failover(size.name, client, work, handler_port, transport, pg, lease_time)
        if pg is not None:
            try:
                figures["postgres_log"] = postgres_log_summary(pg.log_file.read_text(errors="replace"))
            except OSError as exc:
                figures["postgres_log"] = {f"unreadable: {exc!r}": 1}
        return figures
    except Exception:
        keep = True
        if handler is not None:
            sys.stderr.write(f"--- handler service log ---\n{handler.tail()}\n")
        if pg is not None:
            sys.stderr.write(f"--- PostgreSQL log ---\n{pg.log_tail()}\n")
        raise
    finally:
        await client.close()
        if handler is not None:
            handler.stop()
        if pg is not None:
            pg.destroy()
        if keep:
            sys.stderr.write(f"logs kept in {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_stores(
    size_name: str, transport: str = "aiohttp", quiet_wait: float = 0.0, lease_time: float = 5.0, failover: bool = True
) -> dict[str, Any]:
    """Run the store comparison (and the failover) at `size_name`; the figures with the environment."""
    size = SIZES[size_name]
    busy_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else None
    try:
        import uvloop

        figures = uvloop.run(_measure(size, transport, lease_time, failover))
    except ImportError:  # pragma: no cover
        figures = asyncio.run(_measure(size, transport, lease_time, failover))
    return {
        "size": size.name,
        "mode": "stores",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {
            "cpus": os.cpu_count(),
            "git": git_rev(),
            "transport": transport,
            "host": HOST,
            "handler": "one handler service shared by every proxy",
            "load": "round-robin over the proxies' ingress ports, request by request",
            "busy_before": busy_before,
        },
        "figures": figures,
    }
