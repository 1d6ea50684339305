"""handlers_sdk: write durable handler services that the durable proxy invokes and replays."""

from __future__ import annotations

from handlers_sdk.context import (
    CallFuture,
    Context,
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    RunFuture,
    RunOptions,
    SendHandle,
    WorkflowContext,
    WorkflowSharedContext,
)
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError
from handlers_sdk.futures import DurableFuture, gather, select
from handlers_sdk.protocol import Limit
from handlers_sdk.server import HandlerApp, app
from handlers_sdk.service import Service, VirtualObject, Workflow

__all__ = [
    "CallFuture",
    "Context",
    "DurableFuture",
    "DurablePromise",
    "HandlerApp",
    "JournalMismatchError",
    "Limit",
    "ObjectContext",
    "ObjectSharedContext",
    "RetryableError",
    "RunFuture",
    "RunOptions",
    "SendHandle",
    "Service",
    "TerminalError",
    "VirtualObject",
    "Workflow",
    "WorkflowContext",
    "WorkflowSharedContext",
    "__version__",
    "app",
    "gather",
    "select",
]

__version__ = "0.1.0"
