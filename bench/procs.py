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

__all__ = ["Proc", "free_port", "rss_kib", "start_handler", "start_proxy", "wait_http"]

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
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1 only
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


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm
