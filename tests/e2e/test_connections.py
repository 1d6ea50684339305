"""Connections of the real proxy, byte by byte: parser errors as JSON, pipelined garbage, deadlines, caps.

Each test speaks raw HTTP/1.1 over sockets to ``python -m proxy`` (see `tests.e2e.rawhttp`), so
what is asserted is what a client reads off the wire.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.harness import Cluster, ProxyProc, poll
from tests.e2e.rawhttp import connect, parse_responses, read_until_closed

pytestmark = pytest.mark.timeout(90)

#: The reproduction from issue 13: a complete request, then garbage, on one connection.
PIPELINED_GARBAGE = b'POST /Greeter/greet HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n"Ada"X\r\n\r\n'  # noqa: E501 (the exact bytes)

#: Short deadlines, so that the tests wait seconds, not the defaults' tens of seconds.
DEADLINES = {"PROXY_HEADER_TIMEOUT": "1s", "PROXY_KEEP_ALIVE_TIMEOUT": "1s"}


def greeter_proxy(cluster: Cluster, env: dict[str, str] | None = None) -> ProxyProc:
    handler = cluster.handler("examples.greeter:application", name="greeter")
    return cluster.proxy([handler], services=("Greeter",), env={**DEADLINES, **(env or {})})


def ports(proxy: ProxyProc) -> dict[str, int]:
    return {"ingress": proxy.ingress_port, "admin": proxy.admin_port, "callback": proxy.callback_port}


def test_pipelined_garbage_gets_the_answer_with_its_id_then_a_json_400(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    with connect(proxy.ingress_port) as sock:
        sock.sendall(PIPELINED_GARBAGE)
        data, _ = read_until_closed(sock, 15)
    answers = parse_responses(data)
    assert [a.status for a in answers] == [200, 400], data
    answer, error = answers
    assert answer.json() == "Hello, Ada!"
    invocation_id = answer.headers["x-restate-id"]
    assert proxy.invocation(invocation_id)["status"] == "completed"
    assert error.headers["content-type"] == "application/json"
    assert error.headers["connection"] == "close"
    assert error.json()["code"] == 400 and error.json()["error"] == "bad_request"
    assert error.json()["source"] == "ingress"


def test_every_pipelined_request_before_the_garbage_is_answered_in_order(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    request = PIPELINED_GARBAGE[: -len(b"X\r\n\r\n")]
    with connect(proxy.ingress_port) as sock:
        sock.sendall(request + request.replace(b'"Ada"', b'"Bob"') + b"X\r\n\r\n")
        data, _ = read_until_closed(sock, 15)
    answers = parse_responses(data)
    assert [a.status for a in answers] == [200, 200, 400], data
    assert [a.json() for a in answers[:2]] == ["Hello, Ada!", "Hello, Bob!"]
    ids = [a.headers["x-restate-id"] for a in answers[:2]]
    assert len(set(ids)) == 2 and all(proxy.invocation(i)["status"] == "completed" for i in ids)


def test_garbage_inside_a_chunked_body_creates_nothing(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    before = proxy.counts()
    head = (
        b"POST /Greeter/greet HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    with connect(proxy.ingress_port) as sock:
        sock.sendall(head + b'5\r\n"Ada"\r\nZZ\r\n')  # "ZZ" is no chunk size
        data, _ = read_until_closed(sock, 15)
    (error,) = parse_responses(data)
    assert error.status == 400 and error.json()["error"] == "bad_request"
    assert proxy.counts() == before


@pytest.mark.parametrize(
    "garbage",
    [b"X\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01"],
    ids=["method", "header", "version", "tls-to-plain"],
)
def test_parser_errors_are_json_400s_on_every_listener(cluster: Cluster, garbage: bytes) -> None:
    proxy = greeter_proxy(cluster)
    for source, port in ports(proxy).items():
        with connect(port) as sock:
            sock.sendall(garbage)
            data, _ = read_until_closed(sock, 10)
        (error,) = parse_responses(data)
        assert error.status == 400, (source, data)
        assert error.headers["content-type"] == "application/json"
        body = error.json()
        assert (body["code"], body["error"], body["source"]) == (400, "bad_request", source)
        assert body["message"].startswith("invalid HTTP request: "), body
        assert garbage.decode("latin-1").strip() not in body["message"]  # the input is not echoed
    assert proxy.call("Greeter/greet", "Bo").json() == "Hello, Bo!"  # the proxy is fine


def test_a_trickled_request_head_gets_408_and_is_closed(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    before = proxy.counts()
    with connect(proxy.ingress_port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /Greeter/greet HTTP/1.1\r\n")
        for byte in b"host: x\r\ncontent-":  # one byte every 0.2 s: each arrives before any idle timeout
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
        data, _ = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
    (error,) = parse_responses(data)
    assert error.status == 408
    assert error.json()["error"] == "request_timeout"
    assert 0.9 <= elapsed < 5, elapsed
    assert proxy.counts() == before


def test_idle_connections_are_closed_new_and_between_requests(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    for port in ports(proxy).values():
        with connect(port) as sock:  # a new connection that never sends a byte
            data, elapsed = read_until_closed(sock, 10)
        assert data == b"" and 0.9 <= elapsed < 5, (port, data, elapsed)
    with connect(proxy.ingress_port) as sock:  # one request, then nothing: closed after the keep-alive timeout
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        data, elapsed = read_until_closed(sock, 10)
    (health,) = parse_responses(data)
    assert health.status == 200 and 0.9 <= elapsed < 5


def test_stray_bytes_between_requests_do_not_keep_a_connection_open(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster)
    with connect(proxy.ingress_port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        started = time.monotonic()
        for _ in range(20):  # a CRLF every 0.25 s starts no request and must not reset the idle clock
            time.sleep(0.25)
            try:
                sock.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        data, _ = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
    (health,) = parse_responses(data)  # closed quietly: no 408 that could pass for the next answer
    assert health.status == 200 and elapsed < 3, elapsed


def test_a_kept_alive_connection_outlives_the_header_timeout(cluster: Cluster) -> None:
    proxy = greeter_proxy(cluster, {"PROXY_KEEP_ALIVE_TIMEOUT": "4s"})
    with connect(proxy.ingress_port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(2)  # idle longer than the 1 s header timeout, within the keep-alive timeout
        data, elapsed = read_until_closed(sock, 10)
    assert [r.status for r in parse_responses(data)] == [200, 200]
    assert 1 <= elapsed < 5, elapsed


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def open_idle(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """`count` connections that send nothing (the ones the proxy refuses are closed by it)."""
    opened: list[socket.socket] = []
    for _ in range(count):
        sock = stack.enter_context(connect(port))
        opened.append(sock)
    return opened


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.001)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


def test_past_the_connection_cap_a_listener_answers_503_json(cluster: Cluster, sockets: ExitStack) -> None:
    proxy = greeter_proxy(cluster, {"PROXY_MAX_CONNECTIONS": "8", "PROXY_KEEP_ALIVE_TIMEOUT": "30s"})
    held = open_idle(proxy.ingress_port, 8, sockets)
    time.sleep(0.2)
    with connect(proxy.ingress_port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        data, _ = read_until_closed(sock, 5)
    (refused,) = parse_responses(data)
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "unavailable" and refused.json()["source"] == "ingress"
    assert all(still_open(sock) for sock in held)
    # The other listeners have caps of their own.
    assert proxy.http.get(proxy.admin + "/health").status_code == 200
    assert proxy.http.get(proxy.callback + "/health").status_code == 200
    for sock in held:
        sock.close()
    poll(lambda: proxy.http.get(proxy.ingress + "/health").status_code == 200, 10, message="ingress back")


def nofile_limit(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_a_flooded_ingress_leaves_the_callback_to_the_handlers(cluster: Cluster, sockets: ExitStack) -> None:
    """Issue 13's fd exhaustion, bounded: a proxy limited to 512 descriptors, 1,200 idle ingress
    connections, and an invocation of five steps acked through the callback meanwhile."""
    handler = cluster.handler()
    proxy = cluster.proxy(
        [handler], env={"PROXY_KEEP_ALIVE_TIMEOUT": "60s", "PROXY_HEADER_TIMEOUT": "60s"}, preexec_fn=nofile_limit(512)
    )
    assert "lowered to" in proxy.log_tail()  # 4096 per listener does not fit in 512 descriptors
    invocation_id = proxy.send("Ledger/run", {"steps": 5, "sleep": 0.4})
    open_idle(proxy.ingress_port, 1200, sockets)
    assert proxy.fd_count() < 512
    with connect(proxy.ingress_port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        data, _ = read_until_closed(sock, 5)
    assert parse_responses(data)[0].status == 503  # the ingress is full...
    view = proxy.wait_status(invocation_id, ("completed",), timeout=30)  # ...its steps were acked all the same
    assert len(view["journal"]) >= 5
    assert proxy.http.get(proxy.admin + "/health").status_code == 200
    assert proxy.fd_count() < 512
