"""handlers_sdk: write durable handler services that the durable proxy invokes and replays."""

from __future__ import annotations

from handlers_sdk.context import CallFuture, Context, RunOptions, SendHandle
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError
from handlers_sdk.futures import DurableFuture, gather, select
from handlers_sdk.server import HandlerApp, app
from handlers_sdk.service import Service

__all__ = [
    "CallFuture",
    "Context",
    "DurableFuture",
    "HandlerApp",
    "JournalMismatchError",
    "RetryableError",
    "RunOptions",
    "SendHandle",
    "Service",
    "TerminalError",
    "app",
    "gather",
    "select",
]

__version__ = "0.1.0"
