"""``python -m bench --peers``: the same workloads through Restate and through DBOS, in the same run.

Everything the peers need is set up outside the repository, in a cache dir (``$DURABLE_PROXY_BENCH_CACHE``,
default ``~/.cache/durable-proxy-bench``), and reused by the next run:

* Restate: ``npm install @restatedev/restate-server@1.7.12`` (or the closest version the registry has)
  and a venv with ``restate-sdk==1.2.0`` (or closest 1.x) + hypercorn + uvloop. The handlers are
  bench/peers_restate_app.py (served by hypercorn, one process); restate-server runs over a temporary
  base dir with its ingress, admin and node-to-node (fabric) listeners on free 127.0.0.1 ports, TCP
  only (no Unix sockets); the deployment is registered through its admin API.
* DBOS: a venv with ``dbos==3.4.0`` (or closest 3.x) + FastAPI + uvicorn; the handlers are
  bench/peers_dbos_app.py over a temporary SQLite file, served by uvicorn like bench/handlers.py.

Each peer gets the same aiohttp load generator (bench/load.py) and the same counts and durations as
the run's size: trivial and 10-step latency at c=1, trivial and 10-step throughput at c=16 and c=64,
and the RSS of the peer's server. A peer that cannot be set up or run is reported as "n/a: <reason>";
nothing is ever filled in from the reference figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Client, Run
from bench.procs import HOST, ROOT, Proc, free_port, rss_kib, wait_for_quiet, wait_http
from bench.runner import CONCURRENCIES, SIZES, Size

__all__ = ["PEERS", "Prepared", "peer_checks", "peers_block", "prepare", "run_peers"]

PEERS = ("restate", "dbos")
RESTATE_SERVER = ("@restatedev/restate-server", "1.7.12")
RESTATE_SDK = ("restate-sdk", "1.2.0")
DBOS = ("dbos", "3.4.0")
#: Longest a peer's measurement may take (start to stop) before it is reported as n/a.
BUDGET = {"tiny": 120.0, "full": 420.0}
INSTALL_TIMEOUT = 420.0


def cache_dir() -> Path:
    """Where the peers are installed: never inside the repository."""
    return Path(os.environ.get("DURABLE_PROXY_BENCH_CACHE", Path.home() / ".cache" / "durable-proxy-bench"))


class Unavailable(Exception):
    """A peer cannot be set up or measured here; the message is the reason shown in the table."""


@dataclass
class Prepared:
    """What `prepare` found or installed for one peer: its command paths and versions, or why not."""

    name: str
    ok: bool
    reason: str = ""
    versions: dict[str, str] | None = None
    paths: dict[str, Path] | None = None


# --- set-up -------------------------------------------------------------------------------------------


def _run(args: list[str], cwd: Path | None = None, timeout: float = INSTALL_TIMEOUT) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise Unavailable(f"{args[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{' '.join(args[:3])} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise Unavailable(f"{' '.join(args[:4])}: {last[0][:160]}")
    return done.stdout


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def closest_version(wanted: str, available: list[str]) -> str | None:
    """`wanted` if available, else the newest release of its major.minor, else of its major."""
    releases = [v for v in available if _version_key(v)]
    if wanted in releases:
        return wanted
    key = _version_key(wanted)
    for width in (2, 1):
        same = [v for v in releases if _version_key(v)[:width] == key[:width]]
        if same:
            return max(same, key=_version_key)
    return None


def _restate_binary(root: Path) -> Path | None:
    machine = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system(), platform.system().lower())
    binary = root / "node_modules" / "@restatedev" / f"restate-server-{system}-{machine}" / "bin" / "restate-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def _installed_npm_version(root: Path, package: str) -> str | None:
    try:
        meta = json.loads((root / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return version if isinstance(version, str) else None


def _venv(path: Path, requirements: list[tuple[str, str, str]]) -> dict[str, str]:
    """A venv at `path` with each (package, wanted version, fallback spec); returns installed versions."""
    python = path / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(path)], timeout=120)
    versions = _pip_versions(python, [name for name, _, _ in requirements])
    for name, wanted, fallback in requirements:
        if versions.get(name) == wanted or (wanted == "" and versions.get(name)):
            continue
        spec = f"{name}=={wanted}" if wanted else name
        try:
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec])
        except Unavailable:
            if not fallback:
                raise
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{name}{fallback}"])
    versions = _pip_versions(python, [name for name, _, _ in requirements])
    missing = [name for name, _, _ in requirements if name not in versions]
    if missing:
        raise Unavailable(f"not installed in {path}: {', '.join(missing)}")
    return versions


def _pip_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        found: dict[str, str] = json.loads(_run([str(python), "-c", code, *names], timeout=60))
    except (Unavailable, ValueError):
        return {}
    return found


def _prepare_restate(cache: Path) -> Prepared:
    package, wanted = RESTATE_SERVER
    server_root = cache / "restate-server"
    installed = _installed_npm_version(server_root, package)
    if installed is None or _restate_binary(server_root) is None:
        listed = _run(["npm", "view", package, "versions", "--json"], timeout=120)
        try:
            available = json.loads(listed)
        except ValueError as exc:
            raise Unavailable(f"npm view {package}: unreadable answer") from exc
        version = closest_version(wanted, available if isinstance(available, list) else [str(available)])
        if version is None:
            raise Unavailable(f"npm has no {package} {wanted.split('.')[0]}.x")
        server_root.mkdir(parents=True, exist_ok=True)
        if not (server_root / "package.json").exists():
            (server_root / "package.json").write_text('{"name": "durable-proxy-bench-peers", "private": true}\n')
        _run(["npm", "install", "--no-audit", "--no-fund", f"{package}@{version}"], cwd=server_root)
        installed = _installed_npm_version(server_root, package)
    binary = _restate_binary(server_root)
    if binary is None or installed is None:
        raise Unavailable(f"{package} installed no restate-server binary for {platform.system()} {platform.machine()}")
    sdk_name, sdk_wanted = RESTATE_SDK
    venv = cache / "restate-venv"
    versions = _venv(venv, [(sdk_name, sdk_wanted, ">=1,<2"), ("hypercorn", "", ""), ("uvloop", "", "")])
    return Prepared(
        "restate",
        True,
        versions={"restate-server": installed, sdk_name: versions[sdk_name], "hypercorn": versions["hypercorn"]},
        paths={"server": binary, "hypercorn": venv / "bin" / "hypercorn"},
    )


def _prepare_dbos(cache: Path) -> Prepared:
    name, wanted = DBOS
    venv = cache / "dbos-venv"
    versions = _venv(
        venv,
        [(name, wanted, ">=3,<4"), ("fastapi", "", ""), ("uvicorn", "", ""), ("uvloop", "", ""), ("httptools", "", "")],
    )
    return Prepared(
        "dbos",
        True,
        versions={name: versions[name], "fastapi": versions["fastapi"], "uvicorn": versions["uvicorn"]},
        paths={"python": venv / "bin" / "python"},
    )


def prepare() -> dict[str, Prepared]:
    """Install (or find already installed) every peer; a failure is recorded, not raised."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    prepared: dict[str, Prepared] = {}
    steps: dict[str, Callable[[Path], Prepared]] = {"restate": _prepare_restate, "dbos": _prepare_dbos}
    for name, step in steps.items():
        began = time.monotonic()
        try:
            prepared[name] = step(cache)
        except Unavailable as exc:
            prepared[name] = Prepared(name, False, reason=f"setup failed: {exc}")
        sys.stderr.write(
            f"peer {name}: "
            + (f"ready {prepared[name].versions}" if prepared[name].ok else prepared[name].reason)
            + f" ({time.monotonic() - began:.0f} s)\n"
        )
    return prepared


# --- measurement --------------------------------------------------------------------------------------


#: restate-server checks for a newer release on every start (api.github.com), even with telemetry
#: off. A proxy on a closed loopback port makes that request fail on this machine, so nothing
#: leaves it (no DNS lookup either: the proxy would resolve); the SDK service stays direct.
_RESTATE_OFFLINE = {
    "DO_NOT_TRACK": "1",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTATE_", "DBOS_", "VIRTUAL_ENV", "PYTHON"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _mib(kib: dict[str, int]) -> dict[str, float]:
    return {f"{name}_mib": value / 1024 for name, value in kib.items()}


async def _check(run: Run, what: str) -> Run:
    if run.errors or not run.requests:
        raise Unavailable(f"{what}: {run.errors} errors, {run.requests} ok; first: {run.first_error}")
    return run


def _body(workload: str) -> bytes:
    return b'"hello"' if workload == "trivial" else workload.encode()


async def _workloads(client: Client, ingress: str, size: Size) -> dict[str, Any]:
    """The peer's share of the table: latency at c=1, throughput at c=16 and c=64."""
    urls = {"trivial": f"{ingress}/Bench/trivial", "10": f"{ingress}/Bench/steps"}
    for workload, url in urls.items():
        await _check(await client.run(url, _body(workload), 4, count=20), f"warm-up {workload}")
    figures: dict[str, Any] = {}
    for workload, count in zip(("trivial", "10"), size.latency_counts[:2], strict=True):
        run = await _check(await client.run(urls[workload], _body(workload), 1, count=count), f"latency {workload}")
        figures[f"latency_{workload}"] = {"p50_ms": run.p(0.5), "p99_ms": run.p(0.99), "n": run.requests}
    for workload in ("trivial", "10"):
        steps = 0 if workload == "trivial" else int(workload)
        for concurrency in CONCURRENCIES:
            run = await _check(
                await client.run(
                    urls[workload], _body(workload), concurrency, seconds=size.throughput_seconds,
                    warmup=size.warmup_seconds,
                ),
                f"throughput {workload} c={concurrency}",
            )  # fmt: skip
            figures[f"throughput_{workload}_c{concurrency}"] = {
                "inv_per_s": run.rate,
                "steps_per_s": run.rate * steps,
                "p50_ms": run.p(0.5),
                "p99_ms": run.p(0.99),
                "n": run.requests,
            }
    return figures


def _run_async(coro: Coroutine[Any, Any, dict[str, Any]], budget: float) -> dict[str, Any]:
    async def bounded() -> dict[str, Any]:
        try:
            return await asyncio.wait_for(coro, budget)
        except TimeoutError as exc:
            raise Unavailable(f"did not finish within {budget:.0f} s") from exc

    try:
        import uvloop

        return uvloop.run(bounded())
    except ImportError:  # pragma: no cover
        return asyncio.run(bounded())


async def _wait_ingress(client: Client, url: str, timeout: float = 30.0) -> None:
    """Poll `url` (a trivial invocation) until it answers 200: a new deployment takes a moment to show."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = await client.post(url, b'"hello"')
            if status == 200:
                return
            last = f"HTTP {status} {body[:200]!r}"
        except Exception as exc:  # noqa: BLE001 - any failure is retried until the deadline
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise Unavailable(f"ingress not ready after {timeout:.0f} s ({last})")


def _restate_config(work: Path, ingress: int, admin: int, fabric: int) -> Path:
    config = work / "restate.toml"
    config.write_text(
        f"""node-name = "bench"
listen-mode = "tcp"
bind-ip = "{HOST}"
bind-port = {fabric}
advertised-address = "http://{HOST}:{fabric}/"
disable-telemetry = true
log-filter = "warn"

[admin]
bind-port = {admin}
disable-web-ui = true

[ingress]
bind-port = {ingress}
"""
    )
    return config


def _listening(pid: int) -> list[str]:
    """The TCP addresses `pid` listens on (from /proc), to show it bound loopback only."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                if len(address) == 8:
                    ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = "ipv6:" + address
                found.append(f"{ip}:{int(port, 16)}")
    return sorted(found)


def _measure_restate(prepared: Prepared, size: Size) -> dict[str, Any]:
    assert prepared.paths is not None
    work = Path(tempfile.mkdtemp(prefix="durable-proxy-bench-restate-"))
    ingress_port, admin_port, fabric_port, service_port = free_port(), free_port(), free_port(), free_port()
    procs: list[Proc] = []
    keep = False
    try:
        server = Proc(
            "restate-server",
            [str(prepared.paths["server"]), "--config-file", str(_restate_config(work, ingress_port, admin_port,
             fabric_port)), "--base-dir", str(work / "data"), "--no-logo"],
            work / "restate-server.log",
            env=_env(_RESTATE_OFFLINE),
        )  # fmt: skip
        procs.append(server)
        service = Proc(
            "restate SDK service",
            [str(prepared.paths["hypercorn"]), "--bind", f"{HOST}:{service_port}", "--workers", "0",
             "-k", "uvloop", "--log-level", "warning", "bench.peers_restate_app:app"],
            work / "restate-service.log",
            env=_env({}),
        )  # fmt: skip
        procs.append(service)
        wait_http(f"http://{HOST}:{admin_port}/health", server, timeout=60)
        wait_http(f"http://{HOST}:{service_port}/health", service, timeout=30)
        listening = _listening(server.pid)

        async def measure() -> dict[str, Any]:
            client = Client(max_connections=max(CONCURRENCIES) * 2)
            try:
                admin = f"http://{HOST}:{admin_port}"
                status, body = await client.post(
                    f"{admin}/deployments", json.dumps({"uri": f"http://{HOST}:{service_port}"}).encode()
                )
                if status not in (200, 201):
                    raise Unavailable(f"registering the deployment answered {status}: {body[:200]!r}")
                sdk = json.loads(body).get("sdk_version", "")
                status, body = await client.get(f"{admin}/version")
                server_version = json.loads(body).get("version", "") if status == 200 else ""
                ingress = f"http://{HOST}:{ingress_port}"
                await _wait_ingress(client, f"{ingress}/Bench/trivial")
                figures = await _workloads(client, ingress, size)
                figures["server_rss"] = _mib(rss_kib(server.pid))
                figures["service_rss"] = _mib(rss_kib(service.pid))
                figures["server_version"] = server_version
                figures["sdk_version"] = sdk
                figures["listening"] = listening
                return figures
            finally:
                await client.close()

        return _run_async(measure(), BUDGET[size.name])
    except Exception:
        keep = True
        for proc in procs:
            code = proc.popen.poll()
            sys.stderr.write(
                f"--- {proc.name} ({'running' if code is None else f'exited {code}'}) ---\n{proc.tail()}\n"
            )
        raise
    finally:
        for proc in reversed(procs):
            if proc.name == "restate SDK service":
                proc.kill()  # the SDK's SIGTERM handler keeps hypercorn serving; it holds no state
            else:
                proc.stop()
        if keep:
            sys.stderr.write(f"restate logs and data kept in {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _measure_dbos(prepared: Prepared, size: Size) -> dict[str, Any]:
    assert prepared.paths is not None
    work = Path(tempfile.mkdtemp(prefix="durable-proxy-bench-dbos-"))
    port = free_port()
    proc: Proc | None = None
    keep = False
    try:
        proc = Proc(
            "DBOS app",
            [str(prepared.paths["python"]), "-m", "uvicorn", "bench.peers_dbos_app:app", "--host", HOST,
             "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
             "--log-level", "warning", "--no-access-log", "--lifespan", "on"],
            work / "dbos.log",
            env=_env({"DBOS_BENCH_DB": str(work / "dbos.sqlite")}),
        )  # fmt: skip
        wait_http(f"http://{HOST}:{port}/health", proc, timeout=60)
        app = proc

        async def measure() -> dict[str, Any]:
            client = Client(max_connections=max(CONCURRENCIES) * 2)
            try:
                figures = await _workloads(client, f"http://{HOST}:{port}", size)
                figures["server_rss"] = _mib(rss_kib(app.pid))
                figures["listening"] = _listening(app.pid)
                return figures
            finally:
                await client.close()

        return _run_async(measure(), BUDGET[size.name])
    except Exception:
        keep = True
        if proc is not None:
            sys.stderr.write(f"--- DBOS app ---\n{proc.tail()}\n")
        raise
    finally:
        if proc is not None:
            proc.stop()
        if keep:
            sys.stderr.write(f"DBOS logs and data kept in {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_peers(size_name: str, prepared: dict[str, Prepared], quiet_wait: float = 0.0) -> dict[str, Any]:
    """Measure every prepared peer at `size_name`; each is {"status": "ok", ...} or {"status": "n/a", ...}."""
    size = SIZES[size_name]
    measures: dict[str, Callable[[Prepared, Size], dict[str, Any]]] = {
        "restate": _measure_restate,
        "dbos": _measure_dbos,
    }
    out: dict[str, Any] = {}
    for name in PEERS:
        peer = prepared.get(name) or Prepared(name, False, reason="not set up")
        entry: dict[str, Any] = {"versions": peer.versions or {}}
        if not peer.ok:
            out[name] = {**entry, "status": "n/a", "reason": peer.reason}
            continue
        if quiet_wait > 0:
            wait_for_quiet(quiet_wait)
        began = time.monotonic()
        try:
            figures = measures[name](peer, size)
            out[name] = {**entry, "status": "ok", "figures": figures}
        except Unavailable as exc:
            out[name] = {**entry, "status": "n/a", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a row of the table, not a crash
            out[name] = {**entry, "status": "n/a", "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
        sys.stderr.write(f"peer {name}: {out[name]['status']} ({time.monotonic() - began:.0f} s)\n")
    return out


# --- report -------------------------------------------------------------------------------------------


def _ours(figures: dict[str, Any]) -> dict[str, float]:
    """Our figures in the peers' terms."""
    values = {
        "trivial_p50": figures["latency_trivial"]["proxy"]["p50_ms"],
        "trivial_p99": figures["latency_trivial"]["proxy"]["p99_ms"],
        "ten_p50": figures["latency_10"]["proxy"]["p50_ms"],
        "rss": figures["proxy_rss"]["rss_mib"],
        "rss_anon": figures["proxy_rss"]["anon_mib"],
    }
    for workload in ("trivial", "10"):
        for concurrency in CONCURRENCIES:
            row = figures[f"throughput_{workload}_c{concurrency}"]["proxy"]
            values[f"{workload}_c{concurrency}_inv"] = row["inv_per_s"]
            values[f"{workload}_c{concurrency}_steps"] = row["steps_per_s"]
    return values


def _theirs(figures: dict[str, Any]) -> dict[str, float]:
    values = {
        "trivial_p50": figures["latency_trivial"]["p50_ms"],
        "trivial_p99": figures["latency_trivial"]["p99_ms"],
        "ten_p50": figures["latency_10"]["p50_ms"],
        "rss": figures["server_rss"]["rss_mib"],
        "rss_anon": figures["server_rss"]["anon_mib"],
    }
    for workload in ("trivial", "10"):
        for concurrency in CONCURRENCIES:
            row = figures[f"throughput_{workload}_c{concurrency}"]
            values[f"{workload}_c{concurrency}_inv"] = row["inv_per_s"]
            values[f"{workload}_c{concurrency}_steps"] = row["steps_per_s"]
    return values


def peer_checks(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """The comparison targets of issue 6, for the peers that were measured."""
    peers = result.get("peers", {})
    ours = _ours(result["figures"])
    found: list[tuple[str, bool]] = []
    restate = peers.get("restate", {})
    if restate.get("status") == "ok":
        theirs = _theirs(restate["figures"])
        found.append(("trivial p50 <= 1/2 of Restate's", ours["trivial_p50"] <= theirs["trivial_p50"] / 2))
        found.append(("10-step steps/s at c=64 >= 2x Restate's", ours["10_c64_steps"] >= 2 * theirs["10_c64_steps"]))
    dbos = peers.get("dbos", {})
    if dbos.get("status") == "ok":
        theirs = _theirs(dbos["figures"])
        found.append(("10-step steps/s at c=64 >= 10x DBOS's", ours["10_c64_steps"] >= 10 * theirs["10_c64_steps"]))
    return found


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def peers_block(result: dict[str, Any]) -> list[str]:
    """The peers' rows of the table: ours, Restate, DBOS, and how many times better ours is."""
    peers: dict[str, Any] = result.get("peers", {})
    ours = _ours(result["figures"])
    columns: dict[str, dict[str, float] | str] = {}
    labels: dict[str, str] = {}
    for name, title in (("restate", "Restate"), ("dbos", "DBOS")):
        peer = peers.get(name, {"status": "n/a", "reason": "not run"})
        versions = peer.get("versions", {})
        version = versions.get("restate-server" if name == "restate" else "dbos", "")
        labels[name] = f"{title} {version}".strip()
        columns[name] = _theirs(peer["figures"]) if peer.get("status") == "ok" else f"n/a: {peer.get('reason', '')}"

    # (label, key, format, lower is better)
    rows_spec: list[tuple[str, str, Callable[[float], str], bool]] = [
        ("trivial latency c=1, p50", "trivial_p50", _ms, True),
        ("trivial latency c=1, p99", "trivial_p99", _ms, True),
        ("10-step latency c=1, p50", "ten_p50", _ms, True),
    ]
    for workload, label in (("trivial", "trivial"), ("10", "10-step")):
        for concurrency in CONCURRENCIES:
            rows_spec.append((f"{label} c={concurrency} invocations/s", f"{workload}_c{concurrency}_inv", _rate, False))
            if workload != "trivial":
                rows_spec.append((f"{label} c={concurrency} steps/s", f"{workload}_c{concurrency}_steps", _rate, False))
    rows_spec.append(("server RSS after the run", "rss", lambda v: f"{v:,.0f} MiB", True))
    rows_spec.append(("  of which private (anon)", "rss_anon", lambda v: f"{v:,.0f} MiB", True))

    checks = dict(peer_checks(result))

    def target(key: str) -> str:
        if key == "rss":  # the same check as the main table's: our peak RSS
            peak = result["figures"]["proxy_rss"]["peak_mib"] * 1.048576
            return f"ours <= 100 MB {'ok' if peak <= 100 else 'MISS'}"
        parts = []
        wanted = {
            "trivial_p50": [("trivial p50 <= 1/2 of Restate's", "<= 1/2 Restate")],
            "10_c64_steps": [
                ("10-step steps/s at c=64 >= 2x Restate's", ">= 2x Restate"),
                ("10-step steps/s at c=64 >= 10x DBOS's", ">= 10x DBOS"),
            ],
        }.get(key, [])
        for check, text in wanted:
            if check in checks:
                parts.append(f"{text} {'ok' if checks[check] else 'MISS'}")
        return ", ".join(parts)

    def ratio(ours_value: float, column: dict[str, float] | str, key: str, lower_better: bool) -> str:
        if isinstance(column, str) or not ours_value or not column[key]:
            return ""
        return f"{(column[key] / ours_value if lower_better else ours_value / column[key]):.1f}x"

    def cell(column: dict[str, float] | str, key: str, fmt: Callable[[float], str], first: bool) -> str:
        if isinstance(column, str):
            return column if first else ""  # the n/a reason, once
        return fmt(column[key])

    header = ("peers (same workloads, same run)", "ours (proxy)", labels["restate"], labels["dbos"],
              "ours vs Restate", "ours vs DBOS", "target")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for index, (label, key, fmt, lower_better) in enumerate(rows_spec):
        rows.append(
            (
                label,
                fmt(ours[key]),
                cell(columns["restate"], key, fmt, index == 0),
                cell(columns["dbos"], key, fmt, index == 0),
                ratio(ours[key], columns["restate"], key, lower_better),
                ratio(ours[key], columns["dbos"], key, lower_better),
                target(key),
            )
        )
    notes: list[str] = []
    restate = peers.get("restate", {})
    if restate.get("status") == "ok":
        fig = restate["figures"]
        notes.append(
            f"Restate: restate-server {fig.get('server_version', '?')} (RSS above; listening on "
            f"{', '.join(fig.get('listening', [])) or '?'}), {fig.get('sdk_version', '?')} on hypercorn (uvloop, "
            f"one process, RSS {fig['service_rss']['rss_mib']:.0f} MiB); ingress, admin and fabric on 127.0.0.1, "
            "TCP only; default server settings otherwise."
        )
    dbos = peers.get("dbos", {})
    if dbos.get("status") == "ok":
        v = dbos.get("versions", {})
        notes.append(
            f"DBOS: dbos {v.get('dbos', '?')} over SQLite, a FastAPI {v.get('fastapi', '?')} app on uvicorn (uvloop, "
            "httptools, one worker); a trivial call = a workflow with no step; server RSS = the app process."
        )
    notes.append(
        "Our RSS is read after all our workloads (also 100- and 1,000-step runs and the crash/resume), the "
        "peers' after theirs; the rest of our RSS over private is mapped LMDB pages (at most "
        "--resident-map-limit, 32 MiB by default) and shared libraries."
    )
    notes.append(
        "ours vs peer = how many times better ours is (peer latency / ours, ours throughput / peer's); "
        "the reference figures above are not used here."
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    return ["", line(header), sep, *(line(r) for r in rows), *notes]
