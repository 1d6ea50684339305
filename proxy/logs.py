"""Structured logging: one JSON object per line, with the invocation id when there is one."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

__all__ = ["JsonFormatter", "ServerLabel", "configure", "invocation_id", "server"]

#: The invocation the current task works for (set by the invoker around each attempt).
invocation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation_id", default=None)

#: The HTTP server the current task runs, e.g. ``"ingress :8080"`` (set by `proxy.serve` in each
#: server's task). One process runs two uvicorn servers, which log the same lifecycle lines
#: ("Started server process [pid]", "Shutting down", ...): `ServerLabel` says which server each is.
server: contextvars.ContextVar[str | None] = contextvars.ContextVar("server", default=None)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "invocation_id"?, "server"?, "error"?}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        inv = getattr(record, "invocation_id", None) or invocation_id.get()
        if inv:
            line["invocation_id"] = inv
        label = getattr(record, "server", None)
        if label:
            line["server"] = label
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class ServerLabel(logging.Filter):
    """Appends ``(ingress :8080)`` to uvicorn's lines logged while one of the proxy's servers runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the record (once) with the server it comes from; never drops one."""
        label = server.get()
        if label and record.name.startswith("uvicorn") and not getattr(record, "server", None):
            record.msg = f"{record.getMessage()} ({label})"
            record.args = None
            record.__dict__["server"] = label
        return True


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr, as JSON lines (``fmt="json"``) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ServerLabel())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
