"""One attempt of one invocation: runs the handler against its journal and yields an Outcome."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any, Literal

import httpx
import msgspec

from handlers_sdk.ack import AckClient, AckRejected
from handlers_sdk.context import Context
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError
from handlers_sdk.protocol import (
    AppendRequest,
    Completed,
    Errored,
    Failed,
    Failure,
    InvokeRequest,
    JournalItem,
    Outcome,
    RunEntry,
    Suspended,
)
from handlers_sdk.replay import Replay
from handlers_sdk.serde import from_json, to_json
from handlers_sdk.service import HandlerDef

__all__ = ["Attempt", "run_attempt"]

StopReason = Literal["suspend", "fenced", "unreachable"]


class Attempt:
    """State of one attempt: the replay machine, unacknowledged entries and the stop signal."""

    def __init__(self, request: InvokeRequest, mode: str, ack: AckClient) -> None:
        self.request = request
        # Without a callback URL there is nobody to ack to: suspend after each new step.
        self.mode = mode if request.callback_url else "suspend"
        self.replay = Replay(request.journal)
        self.pending: list[JournalItem] = []
        self.mismatch: JournalMismatchError | None = None
        self.stop_detail = ""
        self._ack = ack
        self._in_flight = 0
        self.stopped: asyncio.Future[StopReason] = asyncio.get_running_loop().create_future()

    def step_started(self) -> None:
        """A step body began executing."""
        self._in_flight += 1

    def step_finished(self) -> None:
        """A step body finished (its entry may not be committed yet)."""
        self._in_flight -= 1
        self._maybe_suspend()

    def _maybe_suspend(self) -> None:
        # Wait for every running step so that one re-invocation carries all of a gather's results.
        if self.mode == "suspend" and self.pending and self._in_flight == 0:
            self.stop("suspend")

    def stop(self, reason: StopReason, detail: str = "") -> None:
        """End the attempt early; the runner cancels the handler task."""
        if not self.stopped.done():
            self.stop_detail = detail
            self.stopped.set_result(reason)

    async def _park(self) -> None:
        # Never returns: the runner cancels the handler task that awaits this.
        await asyncio.get_running_loop().create_future()

    async def commit(self, index: int, entry: RunEntry) -> RunEntry:
        """Make a new entry durable; returns it once committed (ack mode) or never (suspend mode)."""
        if self.mode == "suspend":
            self.pending.append(JournalItem(index=index, entry=entry))
            self._maybe_suspend()
            await self._park()
        request = self.request
        try:
            try:
                await self._append(index, entry)
            except AckRejected as exc:
                if exc.status != 413:
                    raise
                # The value is too large to journal: the step fails terminally, deterministically.
                message = f"step {entry.name!r}: result too large to journal"
                entry = RunEntry(name=entry.name, failure=Failure(code=413, message=message))
                await self._append(index, entry)
        except AckRejected as exc:
            self.stop("fenced", str(exc))
            await self._park()
        except httpx.HTTPError as exc:
            self.stop("unreachable", f"proxy callback {request.callback_url}: {exc!r}")
            await self._park()
        return entry

    async def _append(self, index: int, entry: RunEntry) -> None:
        request = self.request
        await self._ack.append(
            request.callback_url,
            AppendRequest(
                invocation_id=request.invocation_id,
                attempt=request.attempt,
                token=request.token,
                index=index,
                entry=entry,
            ),
        )


def _errored(exc: BaseException, entries: list[JournalItem]) -> Errored:
    stack = "".join(traceback.format_exception(exc))
    retry_after: int | None = None
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        retry_after = int(exc.retry_after.total_seconds() * 1000)
    return Errored(
        message=f"{type(exc).__name__}: {exc}",
        stacktrace=stack,
        retry_after_ms=retry_after,
        entries=entries,
    )


def _mismatch(exc: JournalMismatchError, entries: list[JournalItem]) -> Errored:
    return Errored(
        code=exc.code,
        message=str(exc),
        behavior="pause",
        related_index=exc.index,
        related_name=exc.attempted,
        entries=entries,
    )


async def run_attempt(handler: HandlerDef, request: InvokeRequest, mode: str, ack: AckClient) -> Outcome:
    """Run `handler` for one attempt and describe how it ended."""
    attempt = Attempt(request, mode, ack)
    arg: Any = None
    if handler.takes_input:
        try:
            arg = from_json(request.input, handler.input_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Failed(failure=Failure(code=400, message=f"invalid input: {exc}"))
    ctx = Context(attempt)
    coro = handler.fn(ctx, arg) if handler.takes_input else handler.fn(ctx)
    task: asyncio.Future[Any] = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task, attempt.stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    entries = attempt.pending
    if attempt.mismatch is not None:
        return _mismatch(attempt.mismatch, entries)
    if attempt.stopped.done():
        reason = attempt.stopped.result()
        if reason == "suspend":
            return Suspended(entries=entries)
        code = 409 if reason == "fenced" else 503
        return Errored(code=code, message=f"attempt stopped: {reason}: {attempt.stop_detail}")
    attempt.stopped.cancel()
    if task.cancelled():
        return Errored(message="handler task was cancelled", entries=entries)
    exc = task.exception()
    if exc is None:
        try:
            return Completed(value=msgspec.Raw(to_json(task.result())), entries=entries)
        except (TypeError, msgspec.EncodeError) as err:
            message = f"handler returned a value that is not JSON-serialisable: {err}"
            return Failed(failure=Failure(code=500, message=message), entries=entries)
    if isinstance(exc, TerminalError):
        return Failed(failure=Failure(code=exc.status_code, message=exc.message), entries=entries)
    if isinstance(exc, JournalMismatchError):
        return _mismatch(exc, entries)
    return _errored(exc, entries)
