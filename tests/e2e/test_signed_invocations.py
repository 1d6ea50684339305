"""Signed invocations (issue 13, item 1) with real processes: a proxy that made its key at first
start, handler services (uvicorn) that verify it, and captured requests played back at them.

* The order saga runs end to end with signing on; the public key the handlers are given is the
  one the admin API and the CLI show; an unsigned discovery or a forged invoke (a journal saying
  the charge returned) gets 401.
* A request the proxy really sent, captured on its way by a forwarding hop in front of the
  handler, gets 401 and runs no step when it is tampered with (callback URL), sent without its
  signature, replayed to another handler service with the same key, or replayed after its window.
* A handler service without keys warns once at start and accepts what it gets, as before.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import PYTHON, REPO, Cluster, ProxyProc, free_port, poll

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ORDERS = "examples.orders:application"
LEDGER = "tests.handlers.ledger:application"
IDENTITY_HEADERS = ("x-restate-signature-scheme", "x-restate-jwt-v1")
NO_KEYS_WARNING = "no identity keys: this handler service runs whatever anyone who can reach it sends"


@dataclass(frozen=True)
class Captured:
    """One request as the forwarding hop saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def identity(self) -> dict[str, str]:
        """Its signature headers."""
        return {k: v for k, v in self.headers.items() if k in IDENTITY_HEADERS}

    def claims(self) -> dict[str, Any]:
        """The claims of its JWT."""
        payload = self.headers["x-restate-jwt-v1"].split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims


class Forwarder:
    """An HTTP hop on 127.0.0.1 that records every request and passes it on to `target` (where a
    load balancer or a sidecar would sit: a place a request can be captured)."""

    def __init__(self, port: int, target: str) -> None:
        self.captured: list[Captured] = []
        self.url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=target, timeout=30)
        captured = self.captured

        class Hop(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                captured.append(Captured(self.command, self.path, headers, body))
                sent = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
                answer = client.request(self.command, self.path, content=body, headers=sent)
                self.send_response(answer.status_code)
                self.send_header("content-type", answer.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._client = client
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hop)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="forwarder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the sockets."""
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def forwarders() -> Iterator[list[Forwarder]]:
    started: list[Forwarder] = []
    yield started
    for forwarder in started:
        forwarder.close()


def _identity(proxy: ProxyProc) -> dict[str, Any]:
    response = proxy.http.get(f"{proxy.admin}/identity", timeout=5)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _register(proxy: ProxyProc, uri: str) -> httpx.Response:
    return proxy.http.post(f"{proxy.admin}/deployments", json={"uri": uri}, timeout=15)


def _refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 401
    assert reason in body["message"], body


def test_the_saga_runs_signed_and_the_key_shown_is_the_one_handlers_trust(cluster: Cluster) -> None:
    proxy = cluster.proxy(services=())
    view = _identity(proxy)
    public_key = view["public_key"]
    assert public_key.startswith("publickeyv1_")
    assert view["source"] == "data-dir"
    key_file = proxy.data_dir / "signing-key.pem"
    assert view["key_file"] == str(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text().splitlines()[1]

    cli = subprocess.run(
        [PYTHON, "-m", "proxy", "identity", "--admin", proxy.admin],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0] == public_key
    assert secret not in cli.stdout

    handler = cluster.handler(ORDERS, env={"HANDLERS_SDK_IDENTITY_KEYS": public_key})
    assert NO_KEYS_WARNING not in handler.log_tail()
    with httpx.Client(base_url=handler.url, timeout=10) as direct:
        assert direct.get("/health").status_code == 200  # liveness probes need no signature
        _refused(direct.get("/discovery"), "unsigned request")
        # The forgery of the issue: a journal saying the charge already returned, from anyone.
        forged = {
            "invocation_id": "inv_forged", "service": "OrderFulfillment", "handler": "process",
            "input": {"order_id": "o-forged", "sku": "sku-1", "quantity": 1, "amount": 99999},
            "journal": [{"index": 0, "entry": {"kind": "run", "name": "reserve", "value": "res_x"}},
                        {"index": 1, "entry": {"kind": "run", "name": "charge", "value": "ch_paid"}}],
            "attempt": 1, "token": "t", "callback_url": "http://attacker.example:80",
        }  # fmt: skip
        _refused(direct.post("/invoke/OrderFulfillment/process", json=forged), "unsigned request")
        # Signature headers that no key of this service made.
        spoofed = {"x-restate-signature-scheme": "v1", "x-restate-jwt-v1": "e30.e30.AAAA"}
        _refused(direct.post("/invoke/OrderFulfillment/process", json=forged, headers=spoofed), "")

    assert _register(proxy, handler.url).status_code == 201  # its discovery request was signed
    order = {"order_id": "o-1", "sku": "sku-1", "quantity": 2, "amount": 42.5}
    response = proxy.call("OrderFulfillment/process", order)
    assert response.status_code == 200, response.text
    assert response.json().startswith("Order o-1 fulfilled")
    journal = proxy.invocation(response.headers["x-restate-id"])["journal"]
    assert [item["entry"]["name"] for item in journal] == ["reserve", "charge", "label", "email", "complete"]
    assert secret not in proxy.log_tail(200_000)


def test_captured_requests_tampered_unsigned_elsewhere_or_late_get_401_and_run_no_step(
    cluster: Cluster, forwarders: list[Forwarder]
) -> None:
    proxy = cluster.proxy(services=(), env={"PROXY_SIGNING_VALIDITY": "2s"})
    public_key = _identity(proxy)["public_key"]
    hop_port = free_port()
    hop_url = f"http://127.0.0.1:{hop_port}"
    # Behind the hop the Host header names the hop, so A is told the URL it is registered under.
    keys = {"HANDLERS_SDK_IDENTITY_KEYS": public_key}
    handler_a = cluster.handler(LEDGER, env={**keys, "HANDLERS_SDK_DEPLOYMENT_URL": hop_url}, name="handler-a")
    handler_b = cluster.handler(LEDGER, env=keys, name="handler-b")  # same key, another service
    hop = Forwarder(hop_port, handler_a.url)
    forwarders.append(hop)
    assert _register(proxy, hop_url).status_code == 201

    response = proxy.call("Ledger/run", {"steps": 2})
    assert response.status_code == 200, response.text
    inv = response.headers["x-restate-id"]
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    invokes = [c for c in hop.captured if c.path == "/invoke/Ledger/run"]
    assert invokes, hop.captured
    captured = invokes[-1]
    claims = captured.claims()
    assert claims["aud"] == "/invoke/Ledger/run" and claims["method"] == "POST"
    assert claims["deployment"] == hop_url
    assert claims["exp"] - claims["iat"] == 2
    lines = len(cluster.ledger.lines())

    body = json.loads(captured.body)
    assert body["callback_url"] == proxy.callback
    tampered = json.dumps({**body, "callback_url": "http://attacker.example:80"}).encode()
    json_type = {"content-type": "application/json"}
    with httpx.Client(timeout=10) as http:

        def play(url: str, headers: dict[str, str], content: bytes = captured.body) -> httpx.Response:
            return http.post(url + captured.path, content=content, headers={**json_type, **headers})

        _refused(play(handler_b.url, captured.identity()), f"is for deployment '{hop_url}'")
        _refused(play(handler_a.url, {}), "unsigned request")
        _refused(play(handler_a.url, captured.identity(), tampered), "does not cover this body")
        # Later than its window: the very request the proxy sent, untouched.
        time.sleep(max(0.0, claims["exp"] + 1.2 - time.time()))
        _refused(play(handler_a.url, captured.identity()), "signature expired")
        discovery = next(c for c in hop.captured if c.path == "/discovery")
        _refused(http.get(handler_a.url + "/discovery", headers=discovery.identity()), "signature expired")

    assert len(cluster.ledger.lines()) == lines, "a refused request ran a step"
    assert proxy.invocation(inv)["status"] == "completed"


def test_a_handler_without_keys_warns_once_and_serves_unsigned_requests(cluster: Cluster) -> None:
    handler = cluster.handler(LEDGER)
    with httpx.Client(base_url=handler.url, timeout=10) as direct:
        assert direct.get("/discovery").status_code == 200
        assert direct.get("/discovery").status_code == 200
    assert handler.log_tail().count(NO_KEYS_WARNING) == 1


def _new_key(path: Path) -> str:
    made = subprocess.run(
        [PYTHON, "-m", "proxy", "identity", "new-key", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[0]


def test_the_documented_key_rotation_loses_no_call(cluster: Cluster, tmp_path: Path) -> None:
    """README, "Signed invocations": new key, handlers trust both, the proxy's key file replaced
    (no restart), the old key dropped from the handlers."""
    key_file = tmp_path / "proxy-key.pem"
    old_key = _new_key(key_file)
    proxy = cluster.proxy(services=(), env={"PROXY_SIGNING_KEY_FILE": str(key_file)})
    assert _identity(proxy)["public_key"] == old_key and _identity(proxy)["source"] == "file"
    handler = cluster.handler(LEDGER, env={"HANDLERS_SDK_IDENTITY_KEYS": old_key})
    assert _register(proxy, handler.url).status_code == 201
    assert proxy.call("Ledger/run", {"steps": 1}).status_code == 200

    # 1. A new key, made where the proxy can read it.
    new_key = _new_key(tmp_path / "next-key.pem")
    # 2. Handlers trust both keys (a rolling restart of the handler services).
    handler.terminate()
    handler.start({"HANDLERS_SDK_IDENTITY_KEYS": f"{old_key},{new_key}"})
    handler.wait_ready()
    assert proxy.call("Ledger/run", {"steps": 1}).status_code == 200  # still the old key
    # 3. The proxy's key file replaced in one rename: picked up within a second, no restart.
    os.replace(tmp_path / "next-key.pem", key_file)
    poll(lambda: _identity(proxy)["public_key"] == new_key, 10, message="the proxy signing with the new key")
    assert proxy.call("Ledger/run", {"steps": 1}).status_code == 200
    # 4. The old key dropped from the handlers: every request still verifies, so the new key signs.
    handler.terminate()
    handler.start({"HANDLERS_SDK_IDENTITY_KEYS": new_key})
    handler.wait_ready()
    response = proxy.call("Ledger/run", {"steps": 2})
    assert response.status_code == 200, response.text
    assert proxy.starts == 1, "the proxy was never restarted"
    assert f"request identity key rotated: now signing with {new_key}" in proxy.log_tail(200_000)
