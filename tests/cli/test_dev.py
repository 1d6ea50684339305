"""``python -m proxy dev FILE``: proxy + reloading handler in one command, re-registered on changes."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from examples.all import application as all_examples
from handlers_sdk.testing import LocalRuntime
from proxy.tools.dev import DEV_INACTIVITY_TIMEOUT, UsageError, resolve_target, sample_input
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
        "--callback-port", str(free_port()),
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
            "--callback-port", str(free_port()),
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
        "--callback-port", str(free_port()),
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


def _start_dev(cluster: Cluster, handler_file: Path) -> tuple[Proc, str, int, int]:
    """Dev mode on `handler_file`: the process, its banner, the ingress and admin ports."""
    ingress, admin, handler = free_port(), free_port(), free_port()
    argv = [
        PYTHON, "-m", "proxy", "dev", str(handler_file),
        "--ingress-port", str(ingress), "--admin-port", str(admin), "--handler-port", str(handler),
        "--callback-port", str(free_port()),
    ]  # fmt: skip
    dev = Proc("dev", argv, {}, cluster.logs / "dev.log")
    cluster.procs.append(dev)
    dev.start()
    banner = poll(
        lambda: "durable-proxy dev mode" in dev.log_tail() and dev.log_tail(), 30, interval=0.1,
        message=lambda: f"the dev banner; log:\n{dev.log_tail()}",
    )  # fmt: skip
    return dev, banner, ingress, admin


def _curl_of(banner: str) -> tuple[str, str]:
    """The URL and the ``-d`` body of the banner's curl example."""
    (line,) = [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]
    words = shlex.split(line.split("#")[0])
    return words[words.index("POST") + 1], words[words.index("-d") + 1]


def test_dev_mode_fails_fast_on_a_broken_file_and_recovers(cluster: Cluster, tmp_path: Path) -> None:
    """A syntax error saved while dev mode runs: the handler port answers 503 with the import
    error at once (not after the inactivity timeout), the dev terminal and the invocation's last
    failure say why, and once the file is fixed the invocation completes within seconds."""
    handler_file = tmp_path / "greeter_broken.py"
    original = (HERE / "dev_greeter.py").read_text()
    handler_file.write_text(original)
    dev, banner, ingress, admin = _start_dev(cluster, handler_file)
    assert f"an attempt silent for {DEV_INACTIVITY_TIMEOUT:g} s is retried" in banner
    base, admin_url = f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{admin}"

    with httpx.Client(timeout=30) as client:
        url, body = _curl_of(banner)  # the suggested command works as printed
        assert (url, body) == (f"{base}/DevGreeter/greet", '"example"')
        tried = client.post(url, content=body, headers={"content-type": "application/json"})
        assert (tried.status_code, tried.json()) == (200, "Hello, example!"), tried.text

        handler_file.write_text(original + "\n\ndef oops(:\n    pass\n")
        poll(
            lambda: "failed to import: SyntaxError" in dev.log_tail(), 20, interval=0.1,
            message=lambda: f"the import error in the dev terminal; log:\n{dev.log_tail()}",
        )  # fmt: skip
        assert "retried every second" in dev.log_tail()

        sent_at = time.monotonic()
        sent = client.post(
            f"{base}/DevGreeter/greet/send", content='"bob"', headers={"content-type": "application/json"}
        )
        assert sent.status_code == 202, sent.text
        inv = sent.json()["invocationId"]

        def failed_with_the_import_error() -> dict[str, Any] | None:
            view: dict[str, Any] = client.get(f"{admin_url}/invocations/{inv}").json()
            failure = view.get("last_failure") or {}
            return view if "SyntaxError" in failure.get("message", "") else None

        view = poll(failed_with_the_import_error, 10, interval=0.05, message=lambda: dev.log_tail())
        failed_after = time.monotonic() - sent_at
        assert failed_after < DEV_INACTIVITY_TIMEOUT, f"the first attempt failed only after {failed_after:.1f}s"
        assert view["last_failure"]["code"] == 503
        assert "greeter_broken:application failed to import" in view["last_failure"]["message"]
        listed = cli("invocations", "ls", "--width", "400", admin=admin_url)
        assert "failed to import: SyntaxError" in listed.out, listed.out

        fixed_at = time.monotonic()
        handler_file.write_text(original)
        done = poll(
            lambda: (v := client.get(f"{admin_url}/invocations/{inv}").json())["status"] == "completed" and v,
            20, interval=0.05, message=lambda: f"the invocation completed after the fix; log:\n{dev.log_tail()}",
        )  # fmt: skip
        recovered_after = time.monotonic() - fixed_at
        assert done["result"] == "Hello, bob!"
        assert recovered_after < 10, f"completed {recovered_after:.1f}s after the fix"
    print(
        f"\nbroken file: first attempt failed after {failed_after:.2f}s; completed {recovered_after:.2f}s after the fix"
    )
    poll(lambda: "the handler app imports again" in dev.log_tail(), 10, interval=0.1, message=lambda: dev.log_tail())
    assert dev.terminate(timeout=30) == 0, dev.log_tail()


@pytest.mark.parametrize(
    ("service", "handler"),
    [(name, handler) for name, svc in all_examples.services.items() for handler in svc.handlers],
)
def test_sample_inputs_of_the_examples_are_accepted(service: str, handler: str) -> None:
    """The banner's example input of every example handler decodes into the handler's input type
    (a handler without input gets none)."""
    sample = sample_input(all_examples, service, handler)
    assert sample is not None
    definition = all_examples.services[service].handlers[handler]
    if not definition.takes_input:
        assert sample == ""
    else:
        msgspec.json.decode(sample, type=definition.input_type)


def test_the_orders_sample_completes_an_order() -> None:
    """The suggestion for ``examples/orders.py`` used to be ``-d '{}'``, a 400: its sample is a
    whole order, which the saga completes."""
    from examples.orders import application, orders

    sample = sample_input(application, "OrderFulfillment", "process")
    assert sample is not None
    assert json.loads(sample) == {"order_id": "example", "sku": "example", "quantity": 1, "amount": 1.0}
    result = asyncio.run(LocalRuntime([orders]).call(orders, "process", msgspec.Raw(sample.encode())))
    assert result.startswith("Order example fulfilled"), result
    assert sample_input(application, "OrderFulfillment", "nope") is None
