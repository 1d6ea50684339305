"""The step-ack endpoint that handler services post new journal entries to (ack mode)."""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from handlers_sdk.protocol import AppendResponse, decode_append, encode
from proxy import faults
from proxy.errors import BadRequest
from proxy.runtime import Runtime
from proxy.web import read_body

__all__ = ["append_endpoint"]

#: Room for the envelope around an entry (ids, token, index) on top of max_entry_bytes.
_ENVELOPE = 4096


def append_endpoint(runtime: Runtime):  # type: ignore[no-untyped-def]
    """The Starlette endpoint for ``POST /internal/v1/entries``."""
    settings = runtime.settings

    async def append(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request, settings.max_entry_bytes + _ENVELOPE, settings.body_read_timeout)
        try:
            append_request = decode_append(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f"bad append request: {exc}") from None
        await runtime.invoker.append(append_request)
        runtime.metrics.step_seconds.observe(time.perf_counter() - started)
        faults.hit("callbacks.before_response")
        return Response(encode(AppendResponse(index=append_request.index)), media_type="application/json")

    return append
