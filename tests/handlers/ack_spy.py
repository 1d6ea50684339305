"""The chaos app (``Ledger`` and ``Counter``) with the answer to every step ack written down.

Each ack the handler posts appends ``<inv> <index> <attempt> <answer> <callback_url>\\n`` to
``{LEDGER_PATH}.acks`` (one O_APPEND write), where the answer is the HTTP status (``200``,
``409``...), the transport error's class name, or ``cancelled`` (the attempt ended first). A
test sees from it which acks a proxy refused, and which proxy (by its callback URL).

Run: ``uvicorn tests.handlers.ack_spy:application``.
"""

from __future__ import annotations

import os

import httpx

from handlers_sdk import ack
from handlers_sdk.protocol import AppendRequest
from tests.handlers.chaos import application
from tests.handlers.ledger import LEDGER_PATH

__all__ = ["application", "note"]

_append = ack.AckClient.append


def note(request: AppendRequest, answer: str, callback_url: str) -> None:
    """Append one line to the acks file."""
    line = f"{request.invocation_id} {request.index} {request.attempt} {answer} {callback_url}\n"
    fd = os.open(f"{LEDGER_PATH}.acks", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _spied_append(self: ack.AckClient, callback_url: str, request: AppendRequest) -> bytes:
    try:
        answer = await _append(self, callback_url, request)
    except ack.AckRejected as exc:
        note(request, str(exc.status), callback_url)
        raise
    except httpx.HTTPError as exc:
        note(request, type(exc).__name__, callback_url)
        raise
    except BaseException:
        note(request, "cancelled", callback_url)
        raise
    note(request, "200", callback_url)
    return answer


ack.AckClient.append = _spied_append  # type: ignore[method-assign]
