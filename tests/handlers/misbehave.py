"""A raw ASGI handler service that misbehaves on its first invoke requests, then serves `Ledger` properly.

Discovery, health and (after the misbehaving requests) invokes are delegated to the real SDK app of
`tests.handlers.ledger`, so an invocation that survives the misbehaviour completes normally.

Environment:

* ``MISBEHAVE_MODE``: what to do with an invoke request:
  ``500`` / ``502`` / ``503`` (that status, plain-text body), ``retry-after`` (503 with
  ``Retry-After: MISBEHAVE_RETRY_AFTER`` seconds), ``garbage`` (200, bytes that are not JSON),
  ``schema`` (200, JSON of the wrong shape), ``wrongtype`` (200, a valid outcome sent as
  ``text/html``), ``truncated`` (200, body shorter than its
  Content-Length, then the connection closes), ``hang`` (never answers), ``drip`` (200 headers, then
  one byte every 200 ms, never finishing), ``huge`` (200, a valid outcome of ``MISBEHAVE_SIZE`` bytes),
  ``exit`` (the process exits).
* ``MISBEHAVE_TIMES``: how many invoke requests misbehave before it behaves (default -1 = all).
* ``MISBEHAVE_LOG``: a file that gets one JSON line per invoke request (time, attempt, token, id).

Run: ``uvicorn tests.handlers.misbehave:application``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tests.handlers.ledger import application as inner

__all__ = ["application"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODE = os.environ.get("MISBEHAVE_MODE", "500")
TIMES = int(os.environ.get("MISBEHAVE_TIMES", "-1"))
LOG = os.environ.get("MISBEHAVE_LOG", "")
RETRY_AFTER = os.environ.get("MISBEHAVE_RETRY_AFTER", "1")
SIZE = int(os.environ.get("MISBEHAVE_SIZE", str(2 * 1024 * 1024)))

_count = 0
_hung: set[asyncio.Future[None]] = set()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _log(body: bytes, n: int, misbehaving: bool) -> None:
    if not LOG:
        return
    try:
        request = json.loads(body)
    except ValueError:
        request = {}
    line = {
        "t": time.time(),
        "n": n,
        "misbehaving": misbehaving,
        "invocation_id": request.get("invocation_id"),
        "attempt": request.get("attempt"),
        "token": request.get("token"),
        "journal_len": len(request.get("journal", [])),
    }
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _misbehave(receive: Receive, send: Send) -> None:
    text = [(b"content-type", b"text/plain")]
    json_type = [(b"content-type", b"application/json")]
    if MODE in ("500", "502", "503"):
        await _respond(send, int(MODE), b"handler service is having a bad day", text)
    elif MODE == "retry-after":
        await _respond(send, 503, b"come back later", [*text, (b"retry-after", RETRY_AFTER.encode())])
    elif MODE == "garbage":
        await _respond(send, 200, b"\x00\xff<html>not json at all {{{", json_type)
    elif MODE == "wrongtype":
        await _respond(send, 200, b'{"type":"completed","value":"looks fine"}', [(b"content-type", b"text/html")])
    elif MODE == "schema":
        await _respond(send, 200, b'{"type": "bogus", "value": [1, 2, 3]}', json_type)
    elif MODE == "truncated":
        headers = [*json_type, (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # uvicorn closes the connection when the app ends short of its Content-Length.
        await send({"type": "http.response.body", "body": b'{"type":"comp'})
    elif MODE == "hang":
        forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _hung.add(forever)  # keep a reference; never resolved
        await forever
    elif MODE == "drip":
        headers = [*json_type, (b"content-length", b"1000000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(3000):  # ~10 minutes at most
            await send({"type": "http.response.body", "body": b" ", "more_body": True})
            await asyncio.sleep(0.2)
    elif MODE == "huge":
        body = b'{"type":"completed","value":"' + b"x" * SIZE + b'"}'
        await _respond(send, 200, body, json_type)
    elif MODE == "exit":
        os._exit(1)
    else:
        await _respond(send, 500, f"unknown MISBEHAVE_MODE {MODE!r}".encode(), text)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point."""
    global _count
    if scope["type"] != "http" or not scope["path"].startswith("/invoke/"):
        await inner(scope, receive, send)
        return
    body = await _read_body(receive)
    _count += 1
    misbehaving = TIMES < 0 or _count <= TIMES
    _log(body, _count, misbehaving)
    if misbehaving:
        await _misbehave(receive, send)
        return
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    await inner(scope, replay, send)
