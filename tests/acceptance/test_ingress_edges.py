"""Failure matrix #12, #14, #15, #17, #21, #22: what clients can do wrong or rudely at the ingress.
Every bad request gets a 4xx JSON answer and leaves the store untouched; slow or vanishing clients
cannot block others or lose an invocation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterable

import httpx
import pytest

from tests.e2e.harness import Cluster, ProxyProc

pytestmark = pytest.mark.acceptance


def _raw(port: int, head: bytes, chunks: Iterable[bytes] = (), close_after_send: bool = False) -> bytes:
    """Send a raw HTTP request; return whatever the server answered (b'' if nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if close_after_send:
            return b""
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (TimeoutError, ConnectionResetError):
            pass
        return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_oversized_body_gets_413_with_bounded_memory(cluster: Cluster) -> None:
    """#12: a 60 MB chunked body against a 1 MiB limit: 413 JSON, nothing stored, RSS bounded."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_MAX_BODY_BYTES": "1MiB"})
    counts, rss_before = proxy.counts(), proxy.rss_bytes()
    head = (
        b"POST /Ledger/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (60 * 16) + [b"0\r\n\r\n"]
    answer = _raw(proxy.ingress_port, head, chunks)
    assert _status(answer) == 413, answer[:300]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == "payload_too_large"
    # Declared up front, it is refused before the body is read.
    lying = _raw(
        proxy.ingress_port,
        b"POST /Ledger/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n{}",
    )
    assert _status(lying) == 413
    assert proxy.counts() == counts
    assert proxy.rss_bytes() - rss_before < 25 * 1024 * 1024, "the proxy buffered the oversized body"
    assert proxy.call("Ledger/run", {"steps": 1}).status_code == 200


BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str], int]] = [
    # (method, path, body, extra headers, expected status)
    ("POST", "/Ledger/run", b"{", {}, 400),
    ("POST", "/Ledger/run", b"[" * 100_000, {}, 400),
    ("POST", "/Ledger/run", b'"\xff\xfe"', {}, 400),
    ("POST", "/Ledger/run", b"\xff", {}, 400),
    ("POST", "/Ledger/run", b'{"steps": 1} trailing', {}, 400),
    ("POST", "/Ledger/run", b"nul", {}, 400),
    # Restate's answers (docs/restate-compatibility.md): a non-JSON content type is a 400, an
    # empty idempotency-key header is ignored, a GET of a handler invokes it with no input.
    ("POST", "/Ledger/run", b'{"steps": 1}', {"content-type": "text/plain"}, 400),
    ("POST", "/Ledger/run?delay=1s", b'{"steps": 1}', {}, 400),
    ("POST", "/Ledger/run/send?delay=forever", b'{"steps": 1}', {}, 400),
    ("POST", "/Nope/run", b"{}", {}, 404),
    ("POST", "/Ledger/nope", b"{}", {}, 404),
    ("POST", "/" + "S" * 600 + "/run", b"{}", {}, 404),
    ("POST", "/Ledger/run/extra/parts", b"{}", {}, 400),
    ("GET", "/restate/invocation/inv_doesnotexist/attach", b"", {}, 400),  # not an invocation id
    ("GET", "/restate/invocation/inv_doesnotexist/output", b"", {}, 400),
    ("GET", "/restate/invocation/\u00e9t\u00e9/output", b"", {}, 400),
    ("GET", "/restate/invocation/inv_00000000000000000000000000/attach", b"", {}, 404),  # well formed, unknown
    ("GET", "/restate/invocation/inv_00000000000000000000000000/output", b"", {}, 404),
]


def test_bad_requests_get_4xx_json_and_change_nothing(cluster: Cluster) -> None:
    """#14 and #15: malformed bodies, wrong content types, unknown targets and invocations."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    counts = proxy.counts()
    failures = []
    for method, path, body, headers, expected in BAD_REQUESTS:
        response = proxy.http.request(
            method, proxy.ingress + path, content=body or None,
            headers={"content-type": "application/json", **headers},
        )  # fmt: skip
        try:
            error = response.json()
        except ValueError:
            error = {}
        if response.status_code != expected or "message" not in error or error.get("code") != expected:
            failures.append((method, path[:40], body[:20], response.status_code, response.text[:200]))
    assert not failures, failures
    admin = proxy.http.get(f"{proxy.admin}/invocations/inv_doesnotexist")
    assert admin.status_code == 404 and admin.json()["code"] == 404
    assert proxy.counts() == counts
    assert proxy.alive


def test_idempotency_key_is_scoped_to_the_target(cluster: Cluster) -> None:
    """#17: the same key on another handler is another invocation; on the same target with another
    body it is the same invocation (Restate's rule); a 600-byte key works (hashed in the index)."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    first = proxy.call("Ledger/run", {"steps": 1, "tag": "first"}, key="shared")
    other_target = proxy.call("Ledger/big_result", 10, key="shared")
    same_target = proxy.call("Ledger/run", {"steps": 2, "tag": "second"}, key="shared")
    assert first.status_code == other_target.status_code == same_target.status_code == 200
    assert other_target.headers["x-restate-id"] != first.headers["x-restate-id"]
    assert same_target.headers["x-restate-id"] == first.headers["x-restate-id"]
    assert same_target.json() == first.json() and first.json()["tag"] == "first"
    long_key = "k" * 600
    a = proxy.call("Ledger/run", {"steps": 1}, key=long_key)
    b = proxy.call("Ledger/run", {"steps": 1}, key=long_key)
    assert a.status_code == 200 and a.headers["x-restate-id"] == b.headers["x-restate-id"]
    assert proxy.invocation(a.headers["x-restate-id"])["idempotency_key"] == long_key
    assert len(cluster.ledger.invocations()) == 2


async def _slowloris(proxy: ProxyProc, header_conns: int, body_conns: int) -> tuple[list[float], list[bytes]]:
    port = proxy.ingress_port
    writers: list[asyncio.StreamWriter] = []
    slow_bodies: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(header_conns):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /Ledger/run HTTP/1.1\r\nHost: proxy\r\n")
        writers.append(writer)
    for _ in range(body_conns):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /Ledger/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        slow_bodies.append((reader, writer))
        writers.append(writer)
    stop = asyncio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"x")
            await asyncio.sleep(0.5)

    async def answer(reader: asyncio.StreamReader) -> bytes:
        data = b""
        try:
            async with asyncio.timeout(10):
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
                    part = await reader.read(4096)
                    if not part:
                        break
                    data += part
        except (TimeoutError, ConnectionError):
            pass
        return data

    trickler = asyncio.create_task(trickle())
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(15):
            began = time.monotonic()
            response = await client.post(f"{proxy.ingress}/Ledger/run", json={"steps": 1, "tag": f"probe-{n}"})
            assert response.status_code == 200, response.text
            latencies.append(time.monotonic() - began)
    answers = await asyncio.gather(*(answer(reader) for reader, _ in slow_bodies))
    stop.set()
    await trickler
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return latencies, answers


def test_slow_clients_do_not_block_others_and_slow_bodies_get_408(cluster: Cluster) -> None:
    """#21: 200 sockets trickling headers and 50 trickling bodies; probes stay fast, slow bodies
    get 408 from the read deadline, and only the probes wrote anything."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_BODY_READ_TIMEOUT": "1s"})
    counts = proxy.counts()
    latencies, answers = asyncio.run(_slowloris(proxy, header_conns=200, body_conns=50))
    assert max(latencies) < 1.0, latencies
    statuses = [_status(a) for a in answers]
    assert statuses == [408] * 50, statuses
    assert all(b'"request_timeout"' in a for a in answers)
    assert proxy.counts()["invocations"] == counts["invocations"] + 15


def test_client_disconnect_mid_call_then_attach(cluster: Cluster) -> None:
    """#22: the client sends a call and goes away; the invocation completes anyway, its output is
    there by id (attach) and by idempotency key."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    body = json.dumps({"steps": 3, "sleep": 0.1, "tag": "gone"}).encode()
    head = (
        b"POST /Ledger/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: vanishing\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert _raw(proxy.ingress_port, head, close_after_send=True) == b""
    inv = cluster.ledger.wait_for(None, 0, "start").inv
    attached = proxy.attach(inv)
    assert attached.status_code == 200 and attached.json()["tag"] == "gone"
    again = proxy.call("Ledger/run", {"steps": 3, "tag": "ignored"}, key="vanishing")
    assert again.headers["x-restate-id"] == inv and again.json() == attached.json()
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1, 2: 1}
