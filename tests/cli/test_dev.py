"""``python -m proxy dev FILE``: proxy + reloading handler in one command, re-registered on changes."""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path

import httpx
import pytest

from proxy.tools.dev import UsageError, resolve_target
from tests.cli.helpers import cli, table
from tests.e2e.harness import PYTHON, REPO, Cluster, Proc, free_port, poll

HERE = Path(__file__).resolve().parent

#: Appended to the copied handler: a new handler (the deployment must be registered again).
WAVE = '''

@greeter.handler()
async def wave(ctx: Context, name: str) -> str:
    """Added while dev mode runs."""
    return f"*waves at {name}*"


application = app([greeter])
'''


def _post(client: httpx.Client, url: str, body: object) -> httpx.Response:
    return client.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_mode_reloads_and_reregisters(cluster: Cluster, tmp_path: Path) -> None:
    handler_file = tmp_path / "greeter_dev.py"
    handler_file.write_text((HERE / "dev_greeter.py").read_text())
    ingress, admin, handler = free_port(), free_port(), free_port()
    argv = [
        PYTHON, "-m", "proxy", "dev", str(handler_file),
        "--ingress-port", str(ingress), "--admin-port", str(admin), "--handler-port", str(handler),
    ]  # fmt: skip
    dev = Proc("dev", argv, {}, cluster.logs / "dev.log")
    cluster.procs.append(dev)
    dev.start()

    banner = poll(
        lambda: "durable-proxy dev mode" in dev.log_tail() and dev.log_tail(), 30, interval=0.1,
        message=lambda: f"the dev banner; log:\n{dev.log_tail()}",
    )  # fmt: skip
    data_dir = Path(re.search(r"data dir  (\S+) \(deleted on exit\)", banner).group(1))  # type: ignore[union-attr]
    assert data_dir.is_dir()
    assert f"handler   greeter_dev:application at http://127.0.0.1:{handler}" in banner
    assert "DevGreeter (service): greet" in banner
    assert f"curl -s -X POST http://127.0.0.1:{ingress}/DevGreeter/greet" in banner

    base = f"http://127.0.0.1:{ingress}"
    with httpx.Client() as client:
        first = _post(client, f"{base}/DevGreeter/greet", "bob")
        assert (first.status_code, first.json()) == (200, "Hello, bob!"), first.text
        assert _post(client, f"{base}/DevGreeter/wave", "bob").status_code == 404

        handler_file.write_text(handler_file.read_text().replace('GREETING = "Hello"', 'GREETING = "Howdy"') + WAVE)

        def reloaded() -> bool:
            return bool(_post(client, f"{base}/DevGreeter/greet", "bob").json() == "Howdy, bob!")

        poll(reloaded, 30, interval=0.2, message=lambda: f"the new greeting; log:\n{dev.log_tail()}")
        waved = poll(
            lambda: (r := _post(client, f"{base}/DevGreeter/wave", "bob")).status_code == 200 and r, 15, interval=0.2,
            message=lambda: f"the new handler registered; log:\n{dev.log_tail()}",
        )  # fmt: skip
        assert waved.json() == "*waves at bob*"
    assert "handler services changed: registered again" in dev.log_tail()

    listed = cli("invocations", "ls", "--all", admin=f"http://127.0.0.1:{admin}")
    assert listed.code == 0, listed.err
    rows = table(listed.out)
    assert {r["TARGET"] for r in rows} == {"DevGreeter/greet", "DevGreeter/wave"}
    assert {r["STATUS"] for r in rows} == {"completed"}

    assert dev.terminate(timeout=30) == 0, dev.log_tail()
    assert not data_dir.exists()
    assert f"[dev] stopped; removed {data_dir}" in dev.log_tail()
    for port in (ingress, admin, handler):
        assert not _listening(port), f"port {port} still open after dev mode stopped"


def test_dev_mode_usage_errors(tmp_path: Path) -> None:
    missing = cli("dev", str(tmp_path / "nope.py"))
    assert missing.code == 2
    assert missing.err.startswith("error: no such file: ")
    empty = tmp_path / "empty_handlers.py"
    empty.write_text("X = 1\n")
    no_app = cli("dev", str(empty))
    assert no_app.code == 2
    assert "has no handler app" in no_app.err
    broken = tmp_path / "broken_handlers.py"
    broken.write_text("def oops(:\n")
    assert "SyntaxError" in cli("dev", str(broken)).err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli(
            "dev", "examples/greeter.py", "--admin-port", str(port),
            "--ingress-port", str(free_port()), "--handler-port", str(free_port()),
        )  # fmt: skip
    assert busy.code == 2
    assert f"port {port} on 127.0.0.1 is not free" in busy.err
    assert cli("dev").code == 2


def test_resolve_target() -> None:
    by_file = resolve_target("examples/greeter.py")
    assert by_file.import_string == "examples.greeter:application"
    assert by_file.app_dir == REPO
    assert by_file.watch_dirs == (REPO / "examples",)
    by_module = resolve_target("examples.orders")
    assert by_module.import_string == "examples.orders:application"
    assert by_module.watch_dirs == (REPO / "examples",)
    explicit = resolve_target("tests.handlers.durable:suspend_application")
    assert explicit.import_string == "tests.handlers.durable:suspend_application"
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        resolve_target("examples.greeter:nope")
    with pytest.raises(UsageError, match="cannot import 'no_such_module_xyz'"):
        resolve_target("no_such_module_xyz")


def test_dev_sigint_too(cluster: Cluster, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops dev mode cleanly as well, and --data-dir is kept."""
    data_dir = tmp_path / "kept"
    ingress, admin, handler = free_port(), free_port(), free_port()
    argv = [
        PYTHON, "-m", "proxy", "dev", "examples/greeter.py", "--data-dir", str(data_dir),
        "--ingress-port", str(ingress), "--admin-port", str(admin), "--handler-port", str(handler),
    ]  # fmt: skip
    dev = Proc("dev", argv, {}, cluster.logs / "dev.log")
    cluster.procs.append(dev)
    dev.start()
    poll(lambda: "durable-proxy dev mode" in dev.log_tail(), 30, interval=0.1, message=lambda: dev.log_tail())
    with httpx.Client() as client:
        answer = _post(client, f"http://127.0.0.1:{ingress}/Greeter/greet", "ann")
    assert answer.json() == "Hello, ann!"
    dev.signal(signal.SIGINT)
    assert dev.wait(30) == 0, dev.log_tail()
    assert data_dir.is_dir()
    assert f"[dev] stopped; data kept in {data_dir}" in dev.log_tail()
    assert not _listening(handler)
