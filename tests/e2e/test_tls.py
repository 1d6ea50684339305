"""TLS end to end, with a CA and a certificate the test makes itself: HTTPS on the proxy's three
listeners, and a handler deployment served over https:// that the proxy trusts through
``--handler-ca-file``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.certs import CertFiles, make_certs
from tests.e2e.harness import Cluster, HandlerProc, ProxyProc, poll
from tests.e2e.rawhttp import connect, read_until_closed

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path / "certs")


def https_handler(cluster: Cluster, certs: CertFiles) -> HandlerProc:
    """The ledger handler served by uvicorn over TLS (trusting the CA for its https:// acks)."""
    handler = cluster.handler(env={"SSL_CERT_FILE": str(certs.ca)}, start=False)
    handler.argv += ["--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)]
    handler.url = handler.url.replace("http://", "https://")
    handler.start()
    with httpx.Client(verify=certs.client_context(), timeout=2) as client:
        poll(lambda: client.get(handler.url + "/health").status_code == 200, 20, message="https handler /health")
    return handler


def tls_proxy(cluster: Cluster, certs: CertFiles, handlers: list[HandlerProc], env: dict[str, str]) -> ProxyProc:
    """A proxy serving HTTPS on all three listeners, its URLs and client switched to https."""
    tls = {"PROXY_TLS_CERT": str(certs.cert), "PROXY_TLS_KEY": str(certs.key)}
    proxy = cluster.proxy(handlers, env={**tls, **env}, start=False)
    for name in ("ingress", "admin", "callback"):
        setattr(proxy, name, getattr(proxy, name).replace("http://", "https://"))
    proxy.http.close()
    proxy.http = httpx.Client(verify=certs.client_context(), timeout=httpx.Timeout(30, connect=2))
    proxy.start()
    proxy.wait_ready(("Ledger",) if handlers else ())
    return proxy


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_tls_listeners_and_an_https_handler_run_an_invocation(
    cluster: Cluster, certs: CertFiles, transport: str
) -> None:
    handler = https_handler(cluster, certs)
    env = {"PROXY_HANDLER_CA_FILE": str(certs.ca), "PROXY_TRANSPORT": transport}
    proxy = tls_proxy(cluster, certs, [handler], env)
    deployments = proxy.http.get(proxy.admin + "/deployments").json()["deployments"]
    assert [d["uri"] for d in deployments] == [handler.url]
    response = proxy.call("Ledger/run", {"steps": 3})  # invoke over https, acks to the https callback
    assert response.status_code == 200, response.text
    assert len(response.json()["nonces"]) == 3
    view = proxy.invocation(response.headers["x-restate-id"])
    assert view["status"] == "completed" and len(view["journal"]) >= 3
    assert proxy.http.get(proxy.callback + "/health").json() == {"status": "ok"}


def test_a_client_that_does_not_trust_the_ca_is_refused(cluster: Cluster, certs: CertFiles) -> None:
    proxy = tls_proxy(cluster, certs, [], {})
    with httpx.Client(timeout=5) as untrusting, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(proxy.ingress + "/health")
    assert proxy.http.get(proxy.ingress + "/health").status_code == 200


def test_plain_http_to_a_tls_port_fails_cleanly(cluster: Cluster, certs: CertFiles) -> None:
    proxy = tls_proxy(cluster, certs, [], {})
    for port in (proxy.ingress_port, proxy.admin_port, proxy.callback_port):
        with connect(port) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            data, elapsed = read_until_closed(sock, 10)
        assert not data.startswith(b"HTTP/1.1 200"), data
        assert elapsed < 5
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert proxy.http.get(proxy.ingress + "/health").status_code == 200  # still serving
    assert proxy.alive
    assert "Traceback" not in proxy.log_tail(100_000)


def test_an_https_handler_is_not_trusted_without_its_ca(cluster: Cluster, certs: CertFiles) -> None:
    handler = https_handler(cluster, certs)
    proxy = cluster.proxy()
    response = proxy.http.post(proxy.admin + "/deployments", json={"uri": handler.url}, timeout=20)
    assert response.status_code >= 400, response.text
    assert "CERTIFICATE_VERIFY_FAILED" in response.text or "certificate verify failed" in response.text
    assert response.headers["content-type"] == "application/json"


def test_unreadable_tls_files_stop_the_start_with_a_clear_message(cluster: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    proxy = cluster.proxy(env={"PROXY_TLS_CERT": str(missing), "PROXY_TLS_KEY": str(missing)}, start=False)
    proxy.start()
    assert proxy.wait(20) == 2
    assert f"--tls-cert {missing}" in proxy.log_tail()
    assert "Traceback" not in proxy.log_tail()
