"""Real-process harness: the proxy (``python -m proxy``) and handler services (uvicorn) as subprocesses.

Every process is started with ``start_new_session=True`` on a free port below the kernel's ephemeral range,
logs to a file under the test's ``tmp_path``, and is killed by its own PID (never by name) when the
test ends. The helpers here also read the step ledger the test handlers write, and hold the checkers
of the failure matrix (tests/acceptance/__init__.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "REPO",
    "Cluster",
    "HandlerProc",
    "History",
    "Ledger",
    "LedgerLine",
    "Op",
    "Proc",
    "ProxyProc",
    "free_port",
    "fsize_limit",
    "poll",
]

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

#: Fast settings for every proxy the tests start (each test may override).
FAST_PROXY_ENV = {
    "PROXY_RETRY_INITIAL_INTERVAL": "100ms",
    "PROXY_RETRY_MAX_INTERVAL": "1s",
    "PROXY_RETRY_FACTOR": "2",
    "PROXY_INACTIVITY_TIMEOUT": "10s",
    "PROXY_CONNECT_TIMEOUT": "1s",
    "PROXY_DISCOVERY_TIMEOUT": "2s",
    "PROXY_LOG_LEVEL": "info",
}

#: Environment variables of the test process that must not leak into children.
_SCRUBBED_PREFIXES = ("PROXY_", "HANDLER_", "LEDGER_", "MISBEHAVE_", "POISON_")


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (never the same one twice per session).

    Chosen below the kernel's ephemeral range: a port the kernel hands out itself (``bind(0)``) is
    also what it picks for outgoing connections, so a proxy restarted on it could find its port
    taken by a handler's connection to another proxy port.
    """
    low, _high = _ephemeral_range()
    start = max(1024, low - 12000)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(2000):
        port = rng.randrange(start, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {start}..{low}")


def poll(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str | Callable[[], str] = ""
) -> Any:
    """Call `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting for {text or predicate}: {last_error!r}")
        time.sleep(interval)


def fsize_limit(limit_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` that caps file sizes (disk full, unprivileged) with SIGXFSZ ignored.

    Only the soft limit is lowered, so the test can lift it again with ``resource.prlimit``.
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))

    return apply


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.pop("PYTEST_CURRENT_TEST", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


class Proc:
    """One child process that can be started, killed and restarted with the same command."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.preexec_fn = preexec_fn
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int:
        """PID of the current process."""
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """True while the current process runs."""
        return self.popen is not None and self.popen.poll() is None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start (or restart) the process; `env` entries override (a None-free mapping)."""
        assert not self.alive, f"{self.name} is already running"
        self._reap()
        if env:
            self.env.update(env)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"==== start #{self.starts} of {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=_child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=self.preexec_fn,
            )

    def signal(self, sig: int) -> None:
        """Send `sig` to this process only (by its PID)."""
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> int:
        """SIGKILL the process and reap it; returns the exit code."""
        self.signal(signal.SIGKILL)
        return self.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM the process and wait for it to exit; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end on its own; returns the exit code."""
        assert self.popen is not None
        code = self.popen.wait(timeout)
        self._reap()
        return code

    def _reap(self) -> None:
        if self.popen is not None and self.popen.poll() is not None and len(self.exit_codes) < self.starts:
            self.exit_codes.append(self.popen.returncode)

    def stop(self) -> None:
        """Teardown: SIGKILL if still running, always reap."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._reap()

    def log_tail(self, max_bytes: int = 6000) -> str:
        """The end of this process's log file."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no log)"
        return data[-max_bytes:].decode("utf-8", "replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time the current process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self) -> int:
        """Resident set size of the current process."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ValueError("no VmRSS")

    def fd_count(self) -> int:
        """Open file descriptors of the current process."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class HandlerProc(Proc):
    """A handler service served by uvicorn on a fixed port (kept across restarts)."""

    def __init__(self, name: str, app: str, port: int, env: Mapping[str, str], log_path: Path) -> None:
        argv = [
            PYTHON, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        super().__init__(name, argv, env, log_path)
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 20) -> None:
        """Poll ``/health`` until the service answers."""
        with httpx.Client(timeout=2) as client:

            def up() -> bool:
                if not self.alive:
                    raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
                return client.get(self.url + "/health").status_code == 200

            poll(up, timeout, message=f"{self.name} /health")


class ProxyProc(Proc):
    """The proxy: one data dir, fixed ingress/admin/callback ports across restarts."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        deployments: list[str],
        env: Mapping[str, str],
        log_path: Path,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.callback_port = free_port()
        self.data_dir = data_dir
        argv = [
            PYTHON, "-m", "proxy", "--data-dir", str(data_dir),
            "--ingress-port", str(self.ingress_port), "--admin-port", str(self.admin_port),
            "--callback-port", str(self.callback_port),
        ]  # fmt: skip
        for uri in deployments:
            argv += ["--deployment", uri]
        super().__init__(name, argv, {**FAST_PROXY_ENV, **env}, log_path, preexec_fn)
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.callback = f"http://127.0.0.1:{self.callback_port}"
        self.http = httpx.Client(timeout=httpx.Timeout(30, connect=2))
        self.seen_ids: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def wait_ready(self, services: Iterable[str] = (), timeout: float = 20) -> None:
        """Poll both ``/health`` endpoints, then wait until `services` are registered."""

        def up() -> bool:
            if not self.alive:
                raise AssertionError(
                    f"{self.name} exited early (code {self.popen and self.popen.poll()}):\n{self.log_tail()}"
                )
            admin = self.http.get(self.admin + "/health", timeout=2)
            ingress = self.http.get(self.ingress + "/health", timeout=2)
            return admin.status_code == 200 and ingress.status_code == 200 and admin.json()["status"] == "ok"

        poll(up, timeout, message=f"{self.name} /health")
        for name in services:

            def registered(name: str = name) -> bool:
                return self.http.get(f"{self.admin}/services/{name}", timeout=2).status_code == 200

            poll(registered, timeout, message=f"service {name} registered")

    def restart(self, env: Mapping[str, str] | None = None, services: Iterable[str] = ()) -> None:
        """Start again on the same data dir and ports (after a kill or exit) and wait until ready."""
        if self.alive:
            self.kill()
        self.start(env)
        self.wait_ready(services)

    def stop(self) -> None:
        super().stop()
        self.http.close()

    # -- ingress --------------------------------------------------------------------------------

    def call(
        self,
        path: str,
        body: Any = None,
        key: str | None = None,
        timeout: float = 30,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``POST /{path}`` with a JSON body; waits for the result."""
        all_headers = {"content-type": "application/json", **(headers or {})}
        if key is not None:
            all_headers["idempotency-key"] = key
        response = self.http.post(
            f"{self.ingress}/{path.lstrip('/')}", content=json.dumps(body), headers=all_headers, timeout=timeout
        )
        self._remember(response)
        return response

    def send(self, path: str, body: Any = None, key: str | None = None) -> str:
        """``POST /{path}/send``: returns the invocation id (asserts 202)."""
        response = self.call(path.rstrip("/") + "/send", body, key)
        assert response.status_code == 202, (response.status_code, response.text)
        inv_id: str = response.json()["invocationId"]
        return inv_id

    def attach(self, inv_id: str, timeout: float = 30) -> httpx.Response:
        """``GET /restate/invocation/{id}/attach``."""
        return self.http.get(f"{self.ingress}/restate/invocation/{inv_id}/attach", timeout=timeout)

    def output(self, inv_id: str) -> httpx.Response:
        """``GET /restate/invocation/{id}/output``."""
        return self.http.get(f"{self.ingress}/restate/invocation/{inv_id}/output")

    def _remember(self, response: httpx.Response) -> None:
        inv_id = response.headers.get("x-restate-id")
        if inv_id:
            self.seen_ids.add(inv_id)

    # -- admin ----------------------------------------------------------------------------------

    def invocation(self, inv_id: str) -> dict[str, Any]:
        """``GET :admin/invocations/{id}`` (asserts 200)."""
        self.seen_ids.add(inv_id)
        response = self.http.get(f"{self.admin}/invocations/{inv_id}", timeout=5)
        assert response.status_code == 200, (response.status_code, response.text)
        view: dict[str, Any] = response.json()
        return view

    def stats(self) -> dict[str, Any]:
        """``GET :admin/stats``."""
        response = self.http.get(f"{self.admin}/stats", timeout=5)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def counts(self) -> dict[str, int]:
        """Row counts of every LMDB database."""
        counts: dict[str, int] = self.stats()["counts"]
        return counts

    def wait_status(self, inv_id: str, statuses: str | Iterable[str], timeout: float = 30) -> dict[str, Any]:
        """Poll the admin view until the invocation's status is one of `statuses`."""
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            last = self.invocation(inv_id)
            return last if last["status"] in wanted else None

        result: dict[str, Any] = poll(
            check, timeout, interval=0.05, message=lambda: f"{inv_id} in {wanted}; last view {_short(last)}"
        )
        return result

    def append(self, body: Mapping[str, Any]) -> httpx.Response:
        """Post a raw step ack to ``:callback/internal/v1/entries`` (as a handler would)."""
        return self.http.post(
            f"{self.callback}/internal/v1/entries",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )

    def dump_unfinished(self) -> str:
        """Admin views of every invocation this test saw that has not completed (stuck-run detector)."""
        lines: list[str] = []
        for inv_id in sorted(self.seen_ids):
            try:
                view = self.http.get(f"{self.admin}/invocations/{inv_id}", timeout=2).json()
            except (httpx.HTTPError, ValueError) as exc:
                lines.append(f"{inv_id}: admin unreachable ({exc!r})")
                continue
            if view.get("status") != "completed":
                lines.append(f"{inv_id}: {_short(view)}")
        return "\n".join(lines) or "(none)"


def _short(view: Mapping[str, Any]) -> str:
    text = json.dumps({k: v for k, v in view.items() if k != "journal"} | {"journal_len": len(view.get("journal", []))})
    return text[:1500]


# -- ledger ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerLine:
    """One line of the step ledger: ``<inv> <idx> start|end <pid> <nonce>``."""

    pos: int
    inv: str
    idx: int
    kind: str
    pid: int
    nonce: str


class Ledger:
    """The O_APPEND file every test step body writes a ``start`` and an ``end`` line to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[int, list[LedgerLine], dict[str, list[LedgerLine]]] = (-1, [], {})

    def _load(self) -> tuple[list[LedgerLine], dict[str, list[LedgerLine]]]:
        # The file only grows (O_APPEND), so its size says whether the parsed copy is current.
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], {}
        if len(data) == self._cache[0]:
            return self._cache[1], self._cache[2]
        out: list[LedgerLine] = []
        by_inv: dict[str, list[LedgerLine]] = {}
        for pos, raw in enumerate(data.decode().split("\n")[:-1]):
            parts = raw.split()
            if len(parts) != 5:
                raise AssertionError(f"malformed ledger line {pos}: {raw!r}")
            line = LedgerLine(pos, parts[0], int(parts[1]), parts[2], int(parts[3]), parts[4])
            out.append(line)
            by_inv.setdefault(line.inv, []).append(line)
        self._cache = (len(data), out, by_inv)
        return out, by_inv

    def lines(self, inv: str | None = None) -> list[LedgerLine]:
        """Every complete line (of one invocation), in file order (a torn last line from a SIGKILL is ignored)."""
        lines, by_inv = self._load()
        return lines if inv is None else by_inv.get(inv, [])

    def starts(self, inv: str | None = None, idx: int | None = None) -> list[LedgerLine]:
        """``start`` lines, optionally of one invocation / step."""
        return [line for line in self.lines(inv) if line.kind == "start" and (idx is None or line.idx == idx)]

    def ends(self, inv: str | None = None, idx: int | None = None) -> list[LedgerLine]:
        """``end`` lines, optionally of one invocation / step."""
        return [line for line in self.lines(inv) if line.kind == "end" and (idx is None or line.idx == idx)]

    def invocations(self) -> list[str]:
        """Invocation ids in order of first appearance."""
        return list(self._load()[1])

    def start_counts(self, inv: str) -> dict[int, int]:
        """How many times each step of `inv` started."""
        counts: dict[int, int] = {}
        for line in self.starts(inv):
            counts[line.idx] = counts.get(line.idx, 0) + 1
        return counts

    def wait_for(self, inv: str | None, idx: int, kind: str, timeout: float = 20) -> LedgerLine:
        """Poll until a line for step `idx` of `inv` (any invocation if None) with `kind` appears."""

        def find() -> LedgerLine | None:
            for line in self.lines():
                if line.idx == idx and line.kind == kind and (inv is None or line.inv == inv):
                    return line
            return None

        found: LedgerLine = poll(find, timeout, message=f"ledger {inv} {idx} {kind}")
        return found

    # -- checkers -------------------------------------------------------------------------------

    def check_journal(self, inv: str, journal: list[dict[str, Any]]) -> None:
        """The journaled execution of each step is the last one that started: no completed step re-ran.

        A step's journal value carries the nonce of the execution whose result was committed. Any
        ``start`` of that step after that execution's ``end`` would be a journaled step running again.
        """
        lines = self.lines(inv)
        for item in journal:
            value = item["entry"].get("value")
            if not isinstance(value, dict) or "nonce" not in value:
                continue
            idx, nonce = value["idx"], value["nonce"]
            winner_end = [ln for ln in lines if ln.inv == inv and ln.nonce == nonce and ln.kind == "end"]
            assert len(winner_end) == 1, f"step {idx} of {inv}: journaled nonce {nonce} has no single end line"
            reruns = [ln for ln in lines if ln.inv == inv and ln.idx == idx and ln.kind == "start"
                      and ln.pos > winner_end[0].pos]  # fmt: skip
            assert not reruns, f"step {idx} of {inv} ran again after its journaled execution: {reruns}"

    def check_extra_starts(self, inv: str, crashes: int, steps: int | None = None) -> None:
        """Each crash adds at most one extra ``start`` in total, and no step starts more than 1 + crashes."""
        counts = self.start_counts(inv)
        if steps is not None:
            assert sorted(counts) == list(range(steps)), f"steps of {inv} that ran: {sorted(counts)}"
        extra = sum(n - 1 for n in counts.values())
        assert extra <= crashes, f"{inv}: {extra} extra step starts for {crashes} crashes: {counts}"


# -- history ----------------------------------------------------------------------------------------


@dataclass
class Op:
    """One client operation and what the client learned (Jepsen style)."""

    key: str
    outcome: str = "pending"  # ok | fail | unknown
    status: int | None = None
    body: Any = None
    inv_id: str | None = None
    error: str = ""


@dataclass
class History:
    """Every client op of a test, saved to a file for post-mortems."""

    path: Path
    ops: list[Op] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: Op) -> None:
        """Record a finished op."""
        with self.lock:
            self.ops.append(op)
            with open(self.path, "a") as f:
                f.write(json.dumps(op.__dict__, default=str) + "\n")

    def by_outcome(self, outcome: str) -> list[Op]:
        """Ops with one outcome."""
        return [op for op in self.ops if op.outcome == outcome]


# -- the cluster ------------------------------------------------------------------------------------


class Cluster:
    """Every process one test starts; `close()` kills them all (by PID) and reaps them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.ledger = Ledger(tmp_path / "ledger.txt")
        self.history = History(tmp_path / "history.jsonl")
        self.seed = int.from_bytes(os.urandom(4), "big")
        #: More sections for `report` (each called when a test fails; it must not raise).
        self.extra_reports: list[Callable[[], str]] = []

    def handler(
        self,
        app: str = "tests.handlers.ledger:application",
        env: Mapping[str, str] | None = None,
        name: str = "handler",
        start: bool = True,
        port: int | None = None,
    ) -> HandlerProc:
        """A handler service (started and ready unless `start` is False); LEDGER_PATH points at the ledger."""
        full_env = {"LEDGER_PATH": str(self.ledger.path), **(env or {})}
        proc = HandlerProc(name, app, port or free_port(), full_env, self.logs / f"{name}.log")
        self.procs.append(proc)
        if start:
            proc.start()
            proc.wait_ready()
        return proc

    def proxy(
        self,
        handlers: Iterable[HandlerProc] = (),
        services: Iterable[str] = ("Ledger",),
        env: Mapping[str, str] | None = None,
        name: str = "proxy",
        data_dir: Path | None = None,
        start: bool = True,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ProxyProc:
        """A proxy over a fresh data dir with `handlers` as deployments; waits until `services` are known."""
        deployments = [h.url for h in handlers]
        proc = ProxyProc(
            name, data_dir or self.tmp_path / f"{name}-lmdb", deployments, env or {},
            self.logs / f"{name}.log", preexec_fn,
        )  # fmt: skip
        self.procs.append(proc)
        if start:
            proc.start()
            proc.wait_ready(services if deployments else ())
        return proc

    def report(self) -> str:
        """Log tails, unfinished invocations and the seed: printed when a test fails."""
        parts = [f"seed: {self.seed}; artifacts under {self.tmp_path}"]
        for proc in self.procs:
            parts.append(f"---- {proc.name} log (starts {proc.starts}, exits {proc.exit_codes}) ----")
            parts.append(proc.log_tail())
        for proc in self.procs:
            if isinstance(proc, ProxyProc) and proc.alive:
                parts.append(f"---- unfinished invocations seen by {proc.name} ----")
                parts.append(proc.dump_unfinished())
        parts.extend(extra() for extra in self.extra_reports)
        return "\n".join(parts)

    def close(self) -> None:
        """Kill and reap every process this test started."""
        for proc in reversed(self.procs):
            proc.stop()
