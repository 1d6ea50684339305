"""Attempts: send the journal to the handler service, read the outcome, have the machine settle it.

One attempt is one HTTP request to ``{deployment}/invoke/{service}/{handler}``. Every attempt
gets a fresh attempt number and token, committed before the request is sent, so a late ack or
outcome from an older attempt is always fenced (409). An attempt with no sign of life (neither
an ack nor its response) for ``inactivity_timeout`` seconds is abandoned and retried.

The invoker owns the in-memory side of attempts only (which one is in flight, its last sign of
life, retry timers); every durable decision is `durable_core.Machine`'s, and what a commit asks
for next goes back to the runtime as `Effects`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any, cast

import msgspec

from durable_core.effects import Effects
from durable_core.errors import Fenced, ProxyError
from durable_core.journal import new_token
from durable_core.lifecycle import AttemptFailure
from durable_core.machine import Machine
from durable_core.records import InvocationRecord
from durable_core.txn import Backend
from handlers_sdk.clock import Clock, TimerHandle
from handlers_sdk.protocol import (
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
    Suspended,
    decode_outcome,
    encode,
)
from proxy import faults, logs
from proxy.config import Settings
from proxy.engine.identity import Identity
from proxy.engine.leases import Leases
from proxy.engine.metrics import Metrics
from proxy.engine.registry import Registry
from proxy.engine.tracing import AttemptTrace, Tracing
from proxy.engine.transport import ResponseTooLarge, Transport, TransportError
from proxy.store.writer import Writer

__all__ = ["Invoker"]

log = logging.getLogger("proxy.engine.invoker")


class _Live:
    """The in-memory side of the one running attempt of an invocation."""

    __slots__ = ("attempt", "last_activity", "task", "token", "trace")

    def __init__(self, attempt: int, token: str, now: float) -> None:
        self.attempt = attempt
        self.token = token
        self.last_activity = now
        self.task: asyncio.Task[None] | None = None
        #: What the attempt journaled, for its spans (None while tracing is off).
        self.trace: AttemptTrace | None = None


class Invoker:
    """Runs and retries attempts; the only owner of in-flight handler requests.

    Args:
        apply: carries out the effects of the invoker's own commits (set by the runtime).
    """

    def __init__(
        self,
        settings: Settings,
        store: Backend,
        writer: Writer,
        machine: Machine,
        registry: Registry,
        transport: Transport,
        clock: Clock,
        metrics: Metrics,
        apply: Callable[[Effects], None],
        identity: Identity | None = None,
        tracing: Tracing | None = None,
        leases: Leases | None = None,
    ) -> None:
        self._settings = settings
        #: The partitions this proxy drives: every write as an owner carries its fence.
        self._leases = leases or Leases(None, settings.lease_time)
        #: Signs every attempt's request (None only in tests that exercise unsigned handlers).
        self._identity = identity
        #: Emits the spans of attempts and their steps (None: tracing is off, nothing is called).
        self.tracing = tracing
        self._store = store
        self._writer = writer
        self._machine = machine
        self._registry = registry
        self._transport = transport
        self._clock = clock
        self._metrics = metrics
        self._apply = apply
        self.active: dict[str, _Live] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._closing = False

    # -- scheduling ---------------------------------------------------------------------------

    def launch(self, record: InvocationRecord) -> None:
        """Send the attempt that `record` (status running, committed) describes, unless that
        attempt (or a later one) is in flight already."""
        if self._closing:
            return
        live = self.active.get(record.id)
        if live is not None:
            if live.attempt >= record.attempt:
                return
            # An older attempt still winding down in memory: the committed one is current.
            self.abandon(record.id)
        live = _Live(record.attempt, record.token, self._clock.monotonic())
        if self.tracing is not None:
            live.trace = self.tracing.attempt_started(record, self._clock.now_ms())
        self.active[record.id] = live
        live.task = asyncio.create_task(self._run(record, live), name=f"attempt {record.id}")

    def schedule(self, record: InvocationRecord) -> None:
        """Start a new attempt of a backing-off invocation when its retry is due."""
        self._arm(record.id, max(0.0, (record.next_retry_ms - self._clock.now_ms()) / 1000))

    def is_busy(self, invocation_id: str) -> bool:
        """True while an attempt of the invocation is in flight or its retry is armed."""
        return invocation_id in self.active or invocation_id in self._timers

    def _arm(self, invocation_id: str, delay: float) -> None:
        if self._closing:
            return
        old = self._timers.pop(invocation_id, None)
        if old is not None:
            old.cancel()
        self._timers[invocation_id] = self._clock.call_later(
            delay, lambda: asyncio.ensure_future(self.begin(invocation_id))
        )

    async def begin(self, invocation_id: str) -> InvocationRecord | None:
        """Commit a new attempt of an invocation that is running or backing off, and send it
        (nothing if another proxy owns its partition: that one does)."""
        self._timers.pop(invocation_id, None)
        if invocation_id in self.active or self._closing or not self._leases.owns(invocation_id):
            return None
        token, now = new_token(), self._clock.now_ms()
        try:
            record = await self._writer.submit(
                lambda txn: self._machine.begin_attempt(txn, invocation_id, now=now, token=token),
                self._leases.fence(invocation_id),
            )
        except Fenced as exc:
            log.info("no attempt of %s: %s", invocation_id, exc)
            return None
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
        # The token is the callback's only credential: compared in constant time.
        if (
            live is None
            or live.attempt != request.attempt
            or not hmac.compare_digest(live.token.encode(), request.token.encode())
        ):
            raise Fenced(f"attempt {request.attempt} of {request.invocation_id} is not current")
        item = JournalItem(index=request.index, entry=request.entry)
        # Measured as stored: the callback's body limit alone would let entries up to its
        # envelope allowance past max_entry_bytes.
        self._machine.check_entry_size(item, request.invocation_id)
        now = self._clock.now_ms()
        try:
            fence = self._leases.fence(request.invocation_id)
            effects, journaled = await self._writer.submit(
                lambda txn: self._machine.append(
                    txn, request.invocation_id, request.attempt, request.token, item, now=now
                ),
                fence,
            )
        except Fenced as exc:
            if "partition" in str(exc):  # not this attempt's fault: its partition moved (409)
                log.info("ack of step %d of %s refused: %s", request.index, request.invocation_id, exc)
            raise
        live.last_activity = self._clock.monotonic()
        if live.trace is not None:
            live.trace.journaled(request.index, journaled or request.entry, now)
        self._apply(effects)
        if not self._leases.owns(request.invocation_id):
            # Committed while this proxy owned the partition, but it may have been paused since
            # (SIGSTOP) and the partition moved: a 200 now would let this attempt run its next
            # step after the new owner journaled it. The entry stays; the attempt stops here.
            log.info(
                "ack of step %d of %s committed, but its partition moved: 409", request.index, request.invocation_id
            )
            raise Fenced(f"partition of {request.invocation_id} is no longer owned by this proxy: the attempt stops")
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

    def _read_attempt(self, record: InvocationRecord) -> tuple[list[bytes], bytes, dict[str, bytes]]:
        """What an attempt's request carries from the store: journal rows, input, state."""
        machine = self._machine
        with self._store.read() as txn:
            rows = machine.journal(txn, record.id)
            body = machine.input(txn, record.id)
            state = machine.state(txn, record.service, record.key) if record.keyed else {}
        return rows, body, state

    def _request_body(
        self, record: InvocationRecord, read: tuple[list[bytes], bytes, dict[str, bytes]] | None = None
    ) -> bytes:
        rows, body, state = read if read is not None else self._read_attempt(record)
        if self.tracing is not None:
            self.tracing.resumed(record, rows, self._clock.now_ms())
        request = InvokeRequest(
            protocol_version=PROTOCOL_VERSION,
            invocation_id=record.id,
            service=record.service,
            handler=record.handler,
            key=record.key,
            input=msgspec.Raw(body),
            # Stored rows are already JournalItem JSON: splice them in instead of re-encoding.
            journal=cast(Any, msgspec.Raw(b"[" + b",".join(rows) + b"]")),
            attempt=record.attempt,
            token=record.token,
            callback_url=self._settings.effective_callback_url,
            random_seed=record.random_seed,
            headers=record.headers,
            cancelled=record.cancelled,
            state={k: msgspec.Raw(v) for k, v in state.items()},
        )
        return encode(request)

    async def _call(self, record: InvocationRecord, live: _Live) -> Outcome | AttemptFailure:
        """Send the attempt and classify the answer: an outcome, or why there is none."""
        deployment = self._registry.deployment_for(record.service, record.deployment_id)
        if deployment is None:
            return AttemptFailure(Failure(code=503, message=f"no deployment serves {record.service}"))
        path = f"/invoke/{record.service}/{record.handler}"
        url = deployment.uri + path
        if self._leases.clustered:
            # PostgreSQL: three reads of round trips each, off the event loop (the attempt's task
            # waits; the loop serves the others meanwhile).
            body = self._request_body(record, await asyncio.to_thread(self._read_attempt, record))
        else:
            body = self._request_body(record)
        # Signed per attempt: the signature covers the body (journal, token, callback URL) and
        # expires, so the request of one attempt cannot be replayed later or to another service.
        headers = self._identity.headers("POST", path, body, deployment.uri) if self._identity else None
        if live.trace is not None:
            # W3C trace context: the handler's spans continue this attempt's span.
            headers = {**(headers or {}), "traceparent": live.trace.traceparent}
        if not self._leases.owns(record.id):
            # Paused (SIGSTOP) or cut off past the lease since this attempt was committed: its
            # partition may have a new owner that journaled its steps meanwhile, and sending this
            # attempt's older journal would run them again. Its outcome is fenced anyway.
            return AttemptFailure(Failure(code=503, message="the partition is no longer owned by this proxy"))
        send = asyncio.ensure_future(self._transport.request("POST", url, body, headers=headers))
        faults.hit("invoker.after_send")
        timeout = self._settings.inactivity_timeout
        try:
            while True:
                # Acks move `last_activity`, so a long handler that keeps journaling lives on.
                remaining = live.last_activity + timeout - self._clock.monotonic()
                if remaining <= 0:
                    message = f"no activity for {timeout:g}s: attempt abandoned"
                    return AttemptFailure(Failure(code=408, message=message))
                # A future the clock resolves, not a sleeping task: this runs once per attempt.
                tick: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                handle = self._clock.call_later(remaining, functools.partial(_wake, tick))
                try:
                    await asyncio.wait((send, tick), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    handle.cancel()
                if send.done():
                    break
        finally:
            if not send.done():
                send.cancel()
        try:
            response = send.result()
        except ResponseTooLarge as exc:
            # The same handler would answer the same: pause now, not 70 retries that re-run it.
            message = (
                f"handler response larger than {exc.limit} bytes (--max-response-bytes): invocation paused;"
                " return a smaller result (or raise the limit), then resume it, or kill it"
            )
            return AttemptFailure(Failure(code=413, message=message), pause=True)
        except TransportError as exc:
            return AttemptFailure(Failure(code=503, message=f"handler unreachable at {url}: {exc}"))
        if response.status != 200:
            retry_after = _retry_after_ms(response.headers.get("retry-after"))
            message = f"handler answered HTTP {response.status}: {response.body[:300]!r}"
            return AttemptFailure(Failure(code=response.status, message=message), retry_after)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != CONTENT_TYPE:
            # An HTML error page or a proxy's answer, even one that happens to parse: not an outcome.
            message = f"protocol violation: content-type {content_type!r}, expected {CONTENT_TYPE}"
            return AttemptFailure(Failure(code=571, message=message))
        try:
            return decode_outcome(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            return AttemptFailure(Failure(code=571, message=f"protocol violation: bad outcome: {exc}"))

    async def _settle(self, record: InvocationRecord, live: _Live, result: Outcome | AttemptFailure) -> None:
        """Have the machine commit what the attempt produced, then carry out what it decided."""
        inv_id, attempt, token = record.id, live.attempt, live.token
        now, next_token = self._clock.now_ms(), new_token()
        try:
            updated, effects, applied = await self._writer.submit(
                lambda txn: self._machine.settle(txn, inv_id, attempt, token, result, now=now, next_token=next_token),
                self._leases.fence(inv_id),
            )
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
        if self.tracing is not None and live.trace is not None:
            self.tracing.attempt_settled(live.trace, record, result, updated, now)
        self._metrics.attempts.inc(_outcome_name(applied))
        if updated.status == "backing-off":
            self._metrics.retries.inc()
            log.warning(
                "attempt %d of %s failed (%s); retry %d in %d ms",
                attempt, inv_id, updated.last_failure.message if updated.last_failure else "",
                updated.retry_count, updated.next_retry_ms - now,
            )  # fmt: skip
        elif updated.status == "paused":
            log.error("invocation %s paused: %s", inv_id, updated.last_failure)
        self._apply(effects)

    def abandon(self, invocation_id: str) -> None:
        """Forget the in-flight attempt of an invocation (it was fenced by a cancel, kill or pause)."""
        live = self.active.pop(invocation_id, None)
        if live is not None and live.task is not None:
            live.task.cancel()
        handle = self._timers.pop(invocation_id, None)
        if handle is not None:
            handle.cancel()

    def abandon_partitions(self, partitions: set[int]) -> int:
        """Forget every attempt and armed retry of invocations in `partitions` (this proxy lost
        them: their new owner resumes them from their journals). Returns how many."""
        ids = [inv_id for inv_id in (*self.active, *self._timers) if self._leases.partition(inv_id) in partitions]
        for inv_id in ids:
            self.abandon(inv_id)
        return len(set(ids))

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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome_name(result: Outcome | AttemptFailure) -> str:
    if isinstance(result, AttemptFailure):
        return "transport_error"
    return {Completed: "completed", Failed: "failed", Suspended: "suspended", Errored: "error"}[type(result)]


def _retry_after_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        return None
