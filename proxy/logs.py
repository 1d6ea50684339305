"""Structured logging: one JSON object per line, with the invocation id when there is one."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

__all__ = ["JsonFormatter", "configure", "invocation_id"]

#: The invocation the current task works for (set by the invoker around each attempt).
invocation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation_id", default=None)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "invocation_id"?, "error"?}`` per line."""

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
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr, as JSON lines (``fmt="json"``) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
