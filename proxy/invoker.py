"""Attempts: send the journal to the handler service, read the outcome, commit it, retry on failure.

One attempt is one HTTP request to ``{deployment}/invoke/{service}/{handler}``. Every attempt
gets a fresh attempt number and token, committed before the request is sent, so a late ack or
outcome from an older attempt is always fenced (409). An attempt with no sign of life (neither
an ack nor its response) for ``inactivity_timeout`` seconds is abandoned and retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import msgspec

from handlers_sdk.protocol import (
    COMPLETABLE,
    CONTENT_TYPE,
    PROTOCOL_VERSION,
    AppendRequest,
    Completed,
    Entry,
    Errored,
    Failed,
    Failure,
    InvokeRequest,
    JournalItem,
    Outcome,
    RunEntry,
    Suspended,
    decode_outcome,
    encode,
)
from proxy import faults, logs
from proxy.clock import Clock
from proxy.config import Settings
from proxy.entries import (
    Effects,
    finish,
    is_completed,
    new_token,
    put_record,
    read_entry,
    read_record,
    write_entries,
)
from proxy.errors import Fenced, NotFound, PayloadTooLarge, ProxyError
from proxy.journal import (
    InvocationRecord,
    check_current,
    complete,
    fail_attempt,
    pause,
    start_attempt,
    suspend,
)
from proxy.keys import invocation_key, journal_prefix
from proxy.metrics import Metrics
from proxy.objects import read_state
from proxy.registry import Registry
from proxy.retry import RetryPolicy
from proxy.store import Store
from proxy.transport import Transport, TransportError
from proxy.writer import Txn, Writer

__all__ = ["Invoker"]

log = logging.getLogger("proxy.invoker")


class _Live:
    """The in-memory side of the one running attempt of an invocation."""

    __slots__ = ("attempt", "last_activity", "task", "token")

    def __init__(self, attempt: int, token: str, now: float) -> None:
        self.attempt = attempt
        self.token = token
        self.last_activity = now
        self.task: asyncio.Task[None] | None = None


class _AttemptFailure(msgspec.Struct, frozen=True):
    """Why an attempt produced no usable outcome (network, status, garbage, timeout)."""

    failure: Failure
    retry_after_ms: int | None = None


class Invoker:
    """Runs and retries attempts; the only owner of in-flight handler requests."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        writer: Writer,
        registry: Registry,
        transport: Transport,
        clock: Clock,
        on_complete: Callable[[InvocationRecord], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._writer = writer
        self._registry = registry
        self._transport = transport
        self._clock = clock
        self._on_complete = on_complete
        #: Called with a due time whenever a transaction armed a timer (set by the runtime).
        self.on_timer: Callable[[int], None] = lambda due_ms: None
        self._policy = RetryPolicy(
            initial_ms=int(settings.retry_initial_interval * 1000),
            factor=settings.retry_factor,
            max_ms=int(settings.retry_max_interval * 1000),
            max_attempts=settings.retry_max_attempts,
        )
        self._retention_ms = int(settings.retention * 1000)
        self.active: dict[str, _Live] = {}
        self.metrics = Metrics()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing = False

    # -- scheduling ---------------------------------------------------------------------------

    def resolve(self, service: str, handler: str) -> tuple[str, str, str]:
        """(deployment id, handler kind, service type) of `service`/`handler` (NotFound otherwise).

        Runs in the writer thread too: it only reads the registry's dicts.
        """
        svc = self._registry.services.get(service)
        if svc is None:
            raise NotFound(f"service '{service}' not found")
        kind = svc.handlers.get(handler)
        if kind is None:
            raise NotFound(f"handler '{service}/{handler}' not found")
        return svc.deployment_id, kind, svc.type

    def apply(self, effects: Effects) -> None:
        """Act on what a committed transaction asked for."""
        for record in effects.completed:
            self._on_complete(record)
        for record in effects.launch:
            live = self.active.get(record.id)
            if live is not None:
                if live.attempt >= record.attempt:
                    continue
                # An older attempt still winding down in memory: the committed one is current.
                self.abandon(record.id)
            self.launch(record)
        if effects.wake_at is not None:
            self.on_timer(effects.wake_at)

    def launch(self, record: InvocationRecord) -> None:
        """Send the attempt that `record` (status running, committed) describes."""
        if self._closing:
            return
        live = _Live(record.attempt, record.token, self._clock.monotonic())
        self.active[record.id] = live
        live.task = asyncio.create_task(self._run(record, live), name=f"attempt {record.id}")

    def schedule(self, record: InvocationRecord) -> None:
        """Start a new attempt of a backing-off invocation when its retry is due."""
        delay = max(0.0, (record.next_retry_ms - self._clock.now_ms()) / 1000)
        self._arm(record.id, delay)

    def _arm(self, invocation_id: str, delay: float) -> None:
        if self._closing:
            return
        old = self._timers.pop(invocation_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[invocation_id] = loop.call_later(delay, lambda: asyncio.create_task(self.begin(invocation_id)))

    async def begin(self, invocation_id: str) -> InvocationRecord | None:
        """Commit a new attempt of an invocation that is not completed or paused, and send it."""
        self._timers.pop(invocation_id, None)
        if invocation_id in self.active or self._closing:
            return None
        token, now = new_token(), self._clock.now_ms()

        def write(txn: Txn) -> InvocationRecord | None:
            record = read_record(txn, invocation_id)
            if record is None or record.status not in ("running", "backing-off"):
                return None
            record = start_attempt(record, token, now)
            put_record(txn, record)
            return record

        try:
            record = await self._writer.submit(write)
        except ProxyError as exc:
            log.error("cannot start an attempt of %s: %s; retrying", invocation_id, exc)
            self._arm(invocation_id, self._settings.retry_initial_interval)
            return None
        if record is not None:
            self.launch(record)
        return record

    # -- acks -----------------------------------------------------------------------------------

    async def append(self, request: AppendRequest) -> Entry | None:
        """Journal one entry from the current attempt. Returns after commit, with the entry as
        journaled if the proxy completed it on the spot (else None).

        Raises:
            Fenced: the attempt is not current, or the index holds another entry.
            PayloadTooLarge: the entry or the journal is over its limit.
        """
        live = self.active.get(request.invocation_id)
        if live is None or live.attempt != request.attempt or live.token != request.token:
            raise Fenced(f"attempt {request.attempt} of {request.invocation_id} is not current")
        item = JournalItem(index=request.index, entry=request.entry)
        # Measured as stored, like `_cap_entries` does for outcomes: the callback's body limit
        # alone would let entries up to its envelope allowance past max_entry_bytes.
        max_entry = self._settings.max_entry_bytes
        if len(encode(item)) > max_entry:
            raise PayloadTooLarge(f"entry {request.index} of {request.invocation_id} is over {max_entry} bytes")
        max_entries = self._settings.max_journal_entries
        now = self._clock.now_ms()

        def write(txn: Txn) -> tuple[Effects, Entry | None]:
            effects = Effects()
            record = read_record(txn, request.invocation_id)
            if record is None:
                raise Fenced(f"unknown invocation {request.invocation_id}")
            check_current(record, request.attempt, request.token)
            updated = write_entries(
                txn, record, [item], max_entries=max_entries, resolve=self.resolve, now=now, effects=effects
            )
            if updated is not record:
                put_record(txn, updated)
            if not isinstance(request.entry, COMPLETABLE):
                return effects, None
            journaled = read_entry(txn, request.invocation_id, request.index)
            completed = isinstance(journaled, COMPLETABLE) and journaled.completed
            return effects, journaled if completed else None

        effects, journaled = await self._writer.submit(write)
        live.last_activity = self._clock.monotonic()
        self.apply(effects)
        return journaled

    # -- one attempt ----------------------------------------------------------------------------

    async def _run(self, record: InvocationRecord, live: _Live) -> None:
        logs.invocation_id.set(record.id)  # this task's own context: every log line names it
        try:
            result = await self._call(record, live)
            await self._settle(record, live, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("attempt %d of %s crashed", record.attempt, record.id)
            self._arm(record.id, self._settings.retry_initial_interval)
        finally:
            if self.active.get(record.id) is live:
                del self.active[record.id]

    def _request_body(self, record: InvocationRecord) -> bytes:
        rows = self._store.scan_prefix("journal", journal_prefix(record.id))
        journal = msgspec.Raw(b"[" + b",".join(value for _, value in rows) + b"]")
        request = InvokeRequest(
            protocol_version=PROTOCOL_VERSION,
            invocation_id=record.id,
            service=record.service,
            handler=record.handler,
            key=record.key,
            input=msgspec.Raw(self._store.get("inputs", invocation_key(record.id)) or b"null"),
            # Stored rows are already JournalItem JSON: splice them in instead of re-encoding.
            journal=cast(Any, journal),
            attempt=record.attempt,
            token=record.token,
            callback_url=self._settings.effective_callback_url,
            random_seed=record.random_seed,
            headers=record.headers,
            cancelled=record.cancelled,
            state={k: msgspec.Raw(v) for k, v in read_state(self._store, record.service, record.key).items()}
            if record.keyed
            else {},
        )
        return encode(request)

    async def _call(self, record: InvocationRecord, live: _Live) -> Outcome | _AttemptFailure:
        deployment = self._registry.deployment_for(record.service, record.deployment_id)
        if deployment is None:
            return _AttemptFailure(Failure(code=503, message=f"no deployment serves {record.service}"))
        url = f"{deployment.uri}/invoke/{record.service}/{record.handler}"
        body = self._request_body(record)
        send = asyncio.ensure_future(self._transport.request("POST", url, body))
        faults.hit("invoker.after_send")
        timeout = self._settings.inactivity_timeout
        try:
            while True:
                # Acks move `last_activity`, so a long handler that keeps journaling lives on.
                remaining = live.last_activity + timeout - self._clock.monotonic()
                if remaining <= 0:
                    message = f"no activity for {timeout:g}s: attempt abandoned"
                    return _AttemptFailure(Failure(code=408, message=message))
                done, _ = await asyncio.wait({send}, timeout=remaining)
                if done:
                    break
        finally:
            if not send.done():
                send.cancel()
        try:
            response = send.result()
        except TransportError as exc:
            return _AttemptFailure(Failure(code=503, message=f"handler unreachable at {url}: {exc}"))
        if response.status != 200:
            retry_after = _retry_after_ms(response.headers.get("retry-after"))
            message = f"handler answered HTTP {response.status}: {response.body[:300]!r}"
            return _AttemptFailure(Failure(code=response.status, message=message), retry_after)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != CONTENT_TYPE:
            # An HTML error page or a proxy's answer, even one that happens to parse: not an outcome.
            message = f"protocol violation: content-type {content_type!r}, expected {CONTENT_TYPE}"
            return _AttemptFailure(Failure(code=571, message=message))
        try:
            return decode_outcome(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            return _AttemptFailure(Failure(code=571, message=f"protocol violation: bad outcome: {exc}"))

    async def _settle(self, record: InvocationRecord, live: _Live, result: Outcome | _AttemptFailure) -> None:
        """Commit what the attempt produced and decide what happens next."""
        inv_id, attempt, token = record.id, live.attempt, live.token
        now = self._clock.now_ms()
        max_entries = self._settings.max_journal_entries
        max_entry = self._settings.max_entry_bytes
        next_token = new_token()
        entries = [] if isinstance(result, _AttemptFailure) else _cap_entries(result.entries, max_entry)
        if isinstance(result, Suspended) and not entries and not result.waiting_on:
            result = _AttemptFailure(Failure(code=571, message="protocol violation: suspended without progress"))

        def write(txn: Txn) -> tuple[InvocationRecord, Effects]:
            effects = Effects()
            current = read_record(txn, inv_id)
            if current is None:
                raise Fenced(f"unknown invocation {inv_id}")
            check_current(current, attempt, token)
            current = write_entries(
                txn, current, entries, max_entries=max_entries, resolve=self.resolve, now=now, effects=effects
            )
            if isinstance(result, Completed):
                updated = complete(current, now, self._retention_ms, result=bytes(result.value))
            elif isinstance(result, Failed):
                updated = complete(current, now, self._retention_ms, failure=result.failure)
            elif isinstance(result, Suspended):
                waiting = result.waiting_on
                if not waiting or any(is_completed(txn, inv_id, i) for i in waiting):
                    updated = start_attempt(current, next_token, now)
                else:
                    updated = suspend(current, waiting, now)
            elif isinstance(result, Errored) and result.behavior == "pause":
                updated = pause(current, _errored_failure(result), now)
            elif isinstance(result, Errored):
                updated = fail_attempt(current, _errored_failure(result), now, self._policy, result.retry_after_ms)
            else:
                updated = fail_attempt(current, result.failure, now, self._policy, result.retry_after_ms)
            if updated.is_completed:
                finish(txn, updated, now, effects)
            else:
                put_record(txn, updated)
            return updated, effects

        try:
            try:
                updated, effects = await self._writer.submit(write)
            except ProxyError as exc:
                if isinstance(exc, Fenced) or exc.status >= 500:
                    raise
                # The outcome's entries were refused (say, a send to an unknown service): the
                # attempt failed, and counts towards pausing like any other failure.
                result = _AttemptFailure(Failure(code=exc.status, message=f"outcome refused: {exc.message}"))
                entries = []
                updated, effects = await self._writer.submit(write)
        except Fenced as exc:
            log.info("outcome of a stale attempt dropped: %s", exc)
            return
        except ProxyError as exc:
            # Not recorded (e.g. storage full): the invocation is still "running" on disk, so a
            # new attempt replays from the last committed entry.
            log.error("cannot record the outcome of %s: %s; retrying", inv_id, exc)
            self._arm(inv_id, self._settings.retry_initial_interval)
            return
        if self.active.get(inv_id) is live:
            del self.active[inv_id]
        self.metrics.attempts.inc(_outcome_name(result))
        if updated.status == "backing-off":
            self.metrics.retries.inc()
        self.apply(effects)
        if updated.status == "running":
            self.launch(updated)
        elif updated.status == "backing-off":
            log.warning(
                "attempt %d of %s failed (%s); retry %d in %d ms",
                attempt, inv_id, updated.last_failure.message if updated.last_failure else "",
                updated.retry_count, updated.next_retry_ms - now,
            )  # fmt: skip
            self.schedule(updated)
        elif updated.status == "paused":
            log.error("invocation %s paused: %s", inv_id, updated.last_failure)

    def abandon(self, invocation_id: str) -> None:
        """Forget the in-flight attempt of an invocation (it was fenced by a cancel, kill or pause)."""
        live = self.active.pop(invocation_id, None)
        if live is not None and live.task is not None:
            live.task.cancel()
        handle = self._timers.pop(invocation_id, None)
        if handle is not None:
            handle.cancel()

    async def close(self) -> None:
        """Stop every timer and in-flight attempt; their state on disk is resumed at next start."""
        self._closing = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [live.task for live in self.active.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self.active.clear()


def _cap_entries(entries: list[JournalItem], max_bytes: int) -> list[JournalItem]:
    """Replace any entry over the size limit by a terminal step failure (as the ack path does)."""
    capped: list[JournalItem] = []
    for item in entries:
        if len(encode(item)) > max_bytes and isinstance(item.entry, RunEntry):
            message = f"step {item.entry.name!r}: result too large to journal"
            item = JournalItem(
                index=item.index, entry=RunEntry(name=item.entry.name, failure=Failure(code=413, message=message))
            )
        capped.append(item)
    return capped


def _outcome_name(result: Outcome | _AttemptFailure) -> str:
    if isinstance(result, _AttemptFailure):
        return "transport_error"
    return {Completed: "completed", Failed: "failed", Suspended: "suspended", Errored: "error"}[type(result)]


def _errored_failure(result: Errored) -> Failure:
    message = result.message
    if result.related_index is not None and f"index {result.related_index}" not in message:
        message += f" (journal index {result.related_index}: {result.related_name})"
    if result.stacktrace:
        message += "\n" + result.stacktrace[-4000:]
    return Failure(code=result.code, message=message)


def _retry_after_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        return None
