"""Start and stop the real processes the benchmark measures: the proxy and the handler service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = [
    "CpuMeter",
    "Proc",
    "cpu_seconds",
    "free_port",
    "rss_kib",
    "start_handler",
    "start_proxy",
    "wait_for_quiet",
    "wait_http",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process with its log file; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._log.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGKILL)
                self.popen.wait()
        if not self._log.closed:
            self._log.close()

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(url: str, proc: Proc, timeout: float = 30.0, contains: bytes = b"") -> None:
    """Poll `url` until it answers 200 (and its body contains `contains`), or fail."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # 127.0.0.1 only
                body = response.read()
                if response.status == 200 and contains in body:
                    return
                last = f"HTTP {response.status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s ({last}):\n{proc.tail()}")


def start_handler(port: int, log_dir: Path) -> Proc:
    """The benchmark handler service: uvicorn, uvloop, httptools, one worker."""
    args = [
        sys.executable, "-m", "uvicorn", "bench.handlers:application",
        "--host", HOST, "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log", "--lifespan", "on",
    ]  # fmt: skip
    proc = Proc("handler service", args, log_dir / "handler.log", env=_env())
    wait_http(f"http://{HOST}:{port}/health", proc)
    return proc


def start_proxy(
    ingress_port: int, admin_port: int, handler_port: int, data_dir: Path, log_dir: Path, transport: str
) -> Proc:
    """The real proxy (``python -m proxy``) over `data_dir`, registered with the handler service."""
    args = [
        sys.executable, "-m", "proxy",
        "--host", HOST, "--ingress-port", str(ingress_port), "--admin-port", str(admin_port),
        "--callback-port", str(free_port()),
        "--data-dir", str(data_dir), "--deployment", f"http://{HOST}:{handler_port}",
        "--retry-initial-interval", "1ms", "--transport", transport, "--log-level", "warning",
    ]  # fmt: skip
    proc = Proc("proxy", args, log_dir / "proxy.log", env=_env())
    wait_http(f"http://{HOST}:{admin_port}/services", proc, contains=b'"Bench"')
    return proc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def rss_kib(pid: int) -> dict[str, int]:
    """Memory of a process in KiB, from /proc: ``rss`` (and its ``anon`` and ``file`` parts), ``peak``.

    ``file`` counts pages of mapped files: the LMDB map (pages the proxy has read since its last drop
    of them, see ``--resident-map-limit``) and shared libraries. ``anon`` is the process's own memory.
    """
    wanted = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}
    values = dict.fromkeys(wanted.values(), 0)
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in wanted:
                values[wanted[name]] = int(rest.split()[0])
    return values


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def wait_for_quiet(max_wait: float, busy_limit: float = 0.15) -> float:
    """Wait (at most `max_wait` s) until the machine is at most `busy_limit` busy; returns that share."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = _machine()
        time.sleep(1.0)
        busy1, total1 = _machine()
        share = (busy1 - busy0) / max(total1 - total0, 1e-9)
        if share <= busy_limit or time.monotonic() >= deadline:
            return share
        sys.stderr.write(f"waiting for a quiet machine: {share:.0%} of the CPUs busy\n")


class CpuMeter:
    """CPU used by the benchmark's own processes and by everything else on the machine."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, dict[int, float]]:
        busy, total = _machine()
        own = os.times()
        return busy, total, own.user + own.system, {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> dict[str, float]:
        """CPU shares (in CPUs, e.g. 0.8 = 80% of one CPU) since the meter started."""
        busy0, total0, own0, procs0 = self._start
        busy1, total1, own1, procs1 = self._sample()
        cpus = os.cpu_count() or 1
        wall = (total1 - total0) / cpus
        ours = (own1 - own0) + sum(procs1[pid] - procs0[pid] for pid in self.pids)
        return {
            "wall_seconds": wall,
            "ours_cpus": ours / wall if wall else 0.0,
            "others_cpus": max(0.0, (busy1 - busy0) - ours) / wall if wall else 0.0,
            **{f"pid_{pid}_cpus": (procs1[pid] - procs0[pid]) / wall if wall else 0.0 for pid in self.pids},
        }
