"""handlers_sdk: write durable handler services that the durable proxy invokes and replays."""

from __future__ import annotations

from handlers_sdk.context import Context, RunOptions
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError
from handlers_sdk.server import HandlerApp, app
from handlers_sdk.service import Service

__all__ = [
    "Context",
    "HandlerApp",
    "JournalMismatchError",
    "RetryableError",
    "RunOptions",
    "Service",
    "TerminalError",
    "app",
]

__version__ = "0.1.0"
