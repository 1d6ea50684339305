"""One attempt of one invocation: runs the handler against its journal and yields an Outcome."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import httpx
import msgspec

from handlers_sdk.ack import AckClient, AckRejected
from handlers_sdk.clock import Clock, SystemClock
from handlers_sdk.context import context_for
from handlers_sdk.errors import JournalMismatchError, RetryableError, TerminalError
from handlers_sdk.protocol import (
    AppendRequest,
    CancelEntry,
    CompletableEntry,
    Completed,
    Entry,
    Errored,
    Failed,
    Failure,
    InvokeRequest,
    JournalItem,
    Outcome,
    PatchEntry,
    RunEntry,
    Suspended,
    decode_append_response,
)
from handlers_sdk.replay import Replay
from handlers_sdk.serde import from_json, to_json
from handlers_sdk.service import HandlerDef

__all__ = ["Attempt", "run_attempt"]

StopReason = Literal["suspend", "fenced", "unreachable"]


class Attempt:
    """State of one attempt: the replay machine, entries in flight to the proxy, the stop signal.

    In ack mode every new entry is posted to the proxy by a background task (so cancelling the
    handler never cancels an ack half-way); `flush` waits for all of them before the attempt
    reports its outcome. In suspend mode new entries are collected in `pending` and travel in
    the response.

    Args:
        request: what the proxy sent.
        mode: ``"ack"`` or ``"suspend"``.
        ack: posts new entries to the proxy (ack mode).
        clock: the time the handler's deterministic helpers read (timers' deadlines, ``ctx.time()``,
            step timestamps); the system clock by default.
        on_allocate: observer of journal index allocation (see `Replay`).
    """

    def __init__(
        self,
        request: InvokeRequest,
        mode: str,
        ack: AckClient,
        *,
        clock: Clock | None = None,
        on_allocate: Callable[[int], None] | None = None,
    ) -> None:
        self.request = request
        # Without a callback URL there is nobody to ack to: suspend after each new step.
        self.mode = mode if request.callback_url else "suspend"
        self.clock: Clock = clock or SystemClock()
        self.replay = Replay(request.journal, on_allocate)
        self.pending: list[JournalItem] = []
        self.waiting: set[int] = set()
        #: The object's state as this attempt sees it: the eager snapshot plus its own writes.
        self.state: dict[str, bytes] = {k: bytes(v) for k, v in request.state.items()}
        #: Where an earlier attempt raised the cancellation, until this attempt's replay gets there
        #: (only a cancelled invocation can have one: no journal scan for all the others).
        self._cancel_marker = self.replay.cancel_marker() if request.cancelled else None
        self._cancel_pending = request.cancelled and self._cancel_marker is None
        #: The highest completion seq the acks of this attempt answered with.
        self._acked_seq = 0
        self.mismatch: JournalMismatchError | None = None
        self.stop_detail = ""
        self._ack = ack
        self._acks: dict[int, asyncio.Task[Entry]] = {}
        #: Acks not answered yet (so `barrier` is O(1) per step, not O(journal)).
        self._unacked: set[asyncio.Task[Entry]] = set()
        #: The ack of the latest patch marker (`ctx.patched`), which the acks after it wait for.
        self._marker: asyncio.Task[Entry] | None = None
        self._in_flight = 0
        self._suspend_requested = False
        self._loop = asyncio.get_running_loop()
        self.stopped: asyncio.Future[StopReason] = self._loop.create_future()

    def check_cancelled(self, index: int | None = None) -> None:
        """At a new operation (its allocated `index`) or a wait on an uncompleted entry (None):
        raise the cancellation once, so compensation runs after it.

        Where it is raised is journaled (a `CancelEntry` at the operation's index, or at the next
        one for a wait), so that every replay raises it at the same point (`cancel_reached`).

        Raises:
            TerminalError: 409, the first time after the invocation was cancelled.
            JournalMismatchError: a replay waits where the recorded cancellation is not.
        """
        marker = self._cancel_marker
        if marker is not None and index is None:
            # A replay waits on an entry hidden since the cancellation: it is where it was raised.
            self.cancel_reached(self.replay.allocate(), waiting=True)
        if not self._cancel_pending:
            return
        self._cancel_pending = False
        at = self.replay.allocate() if index is None else index
        # Every completion this attempt knows of: the journal's and those its acks returned.
        self.append(at, CancelEntry(seen_seq=self.known_seq()))
        raise TerminalError("invocation cancelled", status_code=409)

    def cancel_reached(self, index: int, waiting: bool = False) -> None:
        """The replay reached `index`: raise the recorded cancellation if it is there.

        Raises:
            TerminalError: 409, where an earlier attempt raised the cancellation.
            JournalMismatchError: a replay waits at `index` but the cancellation is recorded elsewhere.
        """
        marker = self._cancel_marker
        if marker is None or (marker[0] != index and not waiting):
            return
        self._cancel_marker = None
        if marker[0] != index:
            self.mismatch = JournalMismatchError(marker[0], "cancel", f"a wait before entry {index}")
            raise self.mismatch
        raise TerminalError("invocation cancelled", status_code=409)

    def hidden(self, entry: CompletableEntry) -> bool:
        """True for a completion that came after the recorded cancellation, while the replay has
        not reached it: the attempt that raised it did not see this completion either."""
        marker = self._cancel_marker
        return marker is not None and entry.seq > marker[1].seen_seq

    def saw(self, entry: CompletableEntry) -> None:
        """The proxy completed `entry` when journaling it (the ack's answer): it is known now."""
        self._acked_seq = max(self._acked_seq, entry.seq)

    def known_seq(self) -> int:
        """The highest completion seq this attempt knows of: the journal's and its acks' answers."""
        return max(self.replay.seen_seq(), self._acked_seq)

    # -- steps in flight ------------------------------------------------------------------------

    def step_started(self) -> None:
        """A step body began executing."""
        self._in_flight += 1

    def step_finished(self) -> None:
        """A step body finished (its entry may not be committed yet)."""
        self._in_flight -= 1
        self._maybe_suspend()

    def _maybe_suspend(self) -> None:
        # Suspend only once no step body runs, so that one re-invocation carries every result of
        # a gather and no finished body is thrown away.
        if self._in_flight:
            return
        if self._suspend_requested or (self.mode == "suspend" and self.pending):
            self.stop("suspend")

    def request_suspend(self, waiting_on: list[int]) -> None:
        """End the attempt (at the next loop turn) until one of `waiting_on` is completed."""
        self.waiting.update(waiting_on)
        if not self._suspend_requested:
            self._suspend_requested = True
            # Let sibling tasks of a gather register what they wait on before stopping.
            self._loop.call_soon(self._maybe_suspend)

    def stop(self, reason: StopReason, detail: str = "") -> None:
        """End the attempt early; the runner cancels the handler task."""
        if not self.stopped.done():
            self.stop_detail = detail
            self.stopped.set_result(reason)

    async def park(self) -> Any:
        """Never returns: the runner cancels the handler task that awaits this."""
        await self._loop.create_future()

    # -- journaling -----------------------------------------------------------------------------

    def append(self, index: int, entry: Entry) -> None:
        """Start making a new entry durable (returns at once)."""
        if self.mode == "suspend":
            self.pending.append(JournalItem(index=index, entry=entry))
            return
        task = self._acks[index] = self._loop.create_task(self._ack_entry(index, entry, self._marker))
        self._unacked.add(task)
        task.add_done_callback(self._unacked.discard)
        if isinstance(entry, PatchEntry):
            self._marker = task

    async def durable(self, index: int) -> Entry | None:
        """Wait until the entry at `index` is committed; returns the entry as committed.

        Returns None in suspend mode, where nothing is committed before the attempt ends.
        """
        task = self._acks.get(index)
        if task is None:
            return None
        entry = await asyncio.shield(task)
        if self.stopped.done() and self.stopped.result() != "suspend":
            await self.park()
        return entry

    async def commit(self, index: int, entry: RunEntry) -> Entry:
        """Journal a step result; returns it once committed (ack mode) or never (suspend mode)."""
        self.append(index, entry)
        if self.mode == "suspend":
            self._maybe_suspend()
            await self.park()
        committed = await self.durable(index)
        assert committed is not None
        return committed

    async def barrier(self) -> None:
        """Before a step body runs: every earlier entry must be durable (an awakeable id, say,
        must not escape before its entry is committed)."""
        if self.mode == "suspend":
            if self.pending:
                self.request_suspend([])
                await self.park()
            return
        if self._acks:
            if self._unacked:
                await asyncio.wait([asyncio.shield(t) for t in self._unacked])
            if self.stopped.done():
                await self.park()

    async def flush(self) -> None:
        """Wait for every ack in flight (before the attempt reports anything)."""
        if self._acks:
            await asyncio.wait(list(self._acks.values()))

    async def _ack_entry(self, index: int, entry: Entry, after: asyncio.Task[Entry] | None = None) -> Entry:
        request = self.request
        if after is not None and not after.done():
            # Entries after a patch marker are posted once it is committed: a later entry in a
            # journal without the marker would make a replay take the old branch.
            await asyncio.wait({after})
        try:
            try:
                entry = await self._post(index, entry)
            except AckRejected as exc:
                if exc.status != 413 or not isinstance(entry, RunEntry):
                    raise
                # The value is too large to journal: the step fails terminally, deterministically.
                message = f"step {entry.name!r}: result too large to journal"
                entry = await self._post(index, RunEntry(name=entry.name, failure=Failure(code=413, message=message)))
        except AckRejected as exc:
            # 409: a newer attempt owns the invocation. Anything else (a 5xx that outlived the
            # retries, a 4xx for a bad entry) ends this attempt as a failure to be retried.
            self.stop("fenced" if exc.status == 409 else "unreachable", str(exc))
        except httpx.HTTPError as exc:
            self.stop("unreachable", f"proxy callback {request.callback_url}: {exc!r}")
        return entry

    async def _post(self, index: int, entry: Entry) -> Entry:
        """Append `entry`; returns it as journaled (the proxy may have completed it already)."""
        request = self.request
        answer = await self._ack.append(
            request.callback_url,
            AppendRequest(
                invocation_id=request.invocation_id,
                attempt=request.attempt,
                token=request.token,
                index=index,
                entry=entry,
            ),
        )
        # Most answers are just {"index": n}: decode only when the proxy sent the entry back.
        if b'"entry"' in answer:
            journaled = decode_append_response(answer).entry
            if journaled is not None:
                return journaled
        return entry


def _errored(exc: BaseException, entries: list[JournalItem]) -> Errored:
    stack = "".join(traceback.format_exception(exc))
    retry_after: int | None = None
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        # Integer arithmetic: through float seconds, 1001 ms would come out as 1000.
        retry_after = exc.retry_after // timedelta(milliseconds=1)
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


def _finished(task: asyncio.Future[Any], entries: list[JournalItem]) -> Outcome:
    """The outcome of a handler task that ran to its end."""
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


async def run_attempt(
    handler: HandlerDef,
    request: InvokeRequest,
    mode: str,
    ack: AckClient,
    *,
    clock: Clock | None = None,
    on_allocate: Callable[[int], None] | None = None,
) -> Outcome:
    """Run `handler` for one attempt and describe how it ended.

    `clock` and `on_allocate` are as for `Attempt` (the toolkit passes its fake clock and its step
    recorder; a handler service keeps the defaults).
    """
    attempt = Attempt(request, mode, ack, clock=clock, on_allocate=on_allocate)
    arg: Any = None
    if handler.takes_input:
        try:
            arg = from_json(request.input, handler.input_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Failed(failure=Failure(code=400, message=f"invalid input: {exc}"))
    ctx = context_for(handler, attempt)
    coro = handler.fn(ctx, arg) if handler.takes_input else handler.fn(ctx)
    task: asyncio.Future[Any] = asyncio.ensure_future(coro)
    interrupted = False
    try:
        await asyncio.wait({task, attempt.stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            interrupted = True
            task.cancel()
            await asyncio.wait({task})
        await attempt.flush()
    entries = attempt.pending
    if attempt.mismatch is not None:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: else asyncio logs "Task exception was never retrieved"
        return _mismatch(attempt.mismatch, entries)
    reason = attempt.stopped.result() if attempt.stopped.done() else None
    if reason in ("fenced", "unreachable"):
        code = 409 if reason == "fenced" else 503
        return Errored(code=code, message=f"attempt stopped: {reason}: {attempt.stop_detail}")
    if reason == "suspend" and interrupted:
        return Suspended(entries=entries, waiting_on=sorted(attempt.waiting))
    if not task.cancelled():
        return _finished(task, entries)
    return Errored(message="handler task was cancelled", entries=entries)
