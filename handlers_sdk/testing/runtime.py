"""An in-process stand-in for the proxy, running the proxy's own state machine: no proxy, no network.

`LocalRuntime` is a shell around the code that makes every durable decision of the proxy: a
`durable_core.machine.Machine` (resolving targets in the runtime's `Service` objects) over a
`durable_core.memory.MemoryStore`. The machine admits invocations (idempotency keys, a workflow's
run once per key, one exclusive invocation per object key at a time, in arrival order), journals
entries (fencing stale attempts, refusing another operation at a taken index) with their effects
(timers, child invocations, state, promises), completes them, retries or pauses failed attempts,
and cancels and kills. The runtime carries out what each commit asks for (`Effects`), one thing at
a time, until nothing can progress:

* an attempt the machine started: the request is built from the store as the proxy builds it,
  the handler runs in process (`handlers_sdk.attempt.run_attempt`, with the runtime's fake clock),
  its acks (ack mode) go to `Machine.append` and its outcome to `Machine.settle`;
* when no attempt is left to run, time moves: the fake clock skips to the earliest retry, timer
  (a sleep, a delayed send) or test-supplied completion, which is then carried out.

Schedules (``@svc.handler(schedule=...)``, created at construction as the proxy's registration
creates them, or `LocalRuntime.create_schedule`) fire only within `LocalRuntime.run_until` or
`LocalRuntime.advance`, which run everything due up to a fake time and stop there: a schedule
re-arms forever, so running until idle ignores its timers.

So a test never waits on real time. Example::

    rt = LocalRuntime([orders])
    result = await rt.call("OrderFulfillment", "process", Order(...))
    inv = await rt.start("OrderFulfillment", "process", Order(...))
    inv.journal            # {index: entry}, as the proxy stores it
    inv.executions         # every step body that ran, with its journal index
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import heapq
import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec

from durable_core import schedules as schedule_rules
from durable_core.effects import Effects
from durable_core.errors import BadRequest, Conflict, Fenced, NotFound, ProxyError
from durable_core.flow import service_limits
from durable_core.journal import new_token, resolve_in
from durable_core.keys import START_INDEX
from durable_core.lifecycle import AttemptFailure
from durable_core.machine import Limits, Machine, TimerFire
from durable_core.memory import MemoryStore
from durable_core.records import Action, InvocationRecord, ServiceLimits, ServiceRecord, Status
from durable_core.retry import RetryPolicy
from durable_core.rows import read_entry, read_record
from durable_core.schedules import CatchUp, Overlap, ScheduleRecord
from durable_core.txn import ReadTxn, Txn
from handlers_sdk.ack import AckClient, AckRejected
from handlers_sdk.attempt import run_attempt
from handlers_sdk.clock import FakeClock
from handlers_sdk.protocol import (
    AppendRequest,
    AppendResponse,
    CallEntry,
    Entry,
    Errored,
    Failure,
    InvokeRequest,
    JournalItem,
    Outcome,
    SendEntry,
    SleepEntry,
    decode_item,
    encode,
    parse_awakeable_id,
)
from handlers_sdk.serde import to_json
from handlers_sdk.service import HandlerDef, Service
from handlers_sdk.testing.completers import CommitHook, Completer, completion_result
from handlers_sdk.testing.invocation import AttemptFailedError, Invocation
from handlers_sdk.testing.views import PromisesView, ServiceKey, StateView

__all__ = ["LocalRuntime"]

Mode = Literal["ack", "suspend"]
T = TypeVar("T")

_CALLBACK_URL = "inmemory://local-runtime"
#: The deployment the resolver names for every service (there is one: this process).
_DEPLOYMENT = "local"
#: A due time later than any timer, to list them all.
_FOREVER = 2**62


@dataclass(order=True)
class _Scheduled:
    """A test-supplied completion due at `at_ms` on the fake clock."""

    at_ms: int
    order: int
    invocation_id: str = field(compare=False)
    index: int = field(compare=False)
    value: bytes | None = field(compare=False)
    failure: Failure | None = field(compare=False)


class _Registry(Mapping[str, ServiceRecord]):
    """The runtime's services as the proxy's registry holds them once a deployment announced them,
    read live (a test may register handlers on a service after making the runtime)."""

    def __init__(self, services: dict[str, Service]) -> None:
        self._services = services

    def __getitem__(self, name: str) -> ServiceRecord:
        svc = self._services[name]
        handlers = {handler.name: handler.kind for handler in svc.handlers.values()}
        return ServiceRecord(name=svc.name, type=svc.type, handlers=handlers, deployment_id=_DEPLOYMENT)

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)


class _InProcessAck(AckClient):
    """The proxy's step-ack endpoint, in process: each append is one `Machine.append` commit."""

    def __init__(self, runtime: LocalRuntime) -> None:
        super().__init__(None)
        self._runtime = runtime

    async def append(self, callback_url: str, request: AppendRequest) -> bytes:
        """Commit one entry, or raise AckRejected with the status the proxy would answer; the
        answer carries the entry back when journaling it completed it (as the proxy's does)."""
        # An ack is a round trip: the attempt's other tasks (a gather's steps) run meanwhile.
        await asyncio.sleep(0)
        journaled = self._runtime._append(request)
        return encode(AppendResponse(index=request.index, entry=journaled))


def _check_id(invocation_id: str) -> None:
    # Awakeable ids embed the invocation id without its "inv_" prefix and must parse back.
    rest = invocation_id.removeprefix("inv_")
    if rest == invocation_id or not rest.isascii() or not rest.isalnum():
        raise ValueError(f"invocation id {invocation_id!r} must be 'inv_' followed by ASCII letters and digits")


class LocalRuntime:
    """Runs handlers of `services` in process on the proxy's state machine (see the module docs).

    Args:
        services: the services whose handlers can be invoked (and called by other handlers).
        mode: ``"suspend"`` (default) ends every attempt at each new step and re-invokes with the
            longer journal, so every step boundary is also a replay (non-determinism shows up in
            ordinary tests); ``"ack"`` acks each step in process and replays only after failures.
        clock: the fake clock timers and retries advance (a new one by default).
        max_retries: retryable failures of an invocation before it pauses (0: the first pauses,
            so a bug surfaces as an exception with its stack trace rather than a retry loop).
            Retries back off as the proxy's default policy does, without jitter, on the fake
            clock (a longer ``retry_after`` of the error wins).
        max_attempts: a guard against handlers that never finish.
        random_seed: seed of ``ctx.random()`` for invocations that do not pass their own, the
            callees of calls and sends included.
    """

    def __init__(
        self,
        services: Iterable[Service] | Service,
        *,
        mode: Mode = "suspend",
        clock: FakeClock | None = None,
        max_retries: int = 0,
        max_attempts: int = 10_000,
        random_seed: int = 0,
    ) -> None:
        if mode not in ("ack", "suspend"):
            raise ValueError("mode must be 'ack' or 'suspend'")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        svcs = [services] if isinstance(services, Service) else list(services)
        self.services: dict[str, Service] = {s.name: s for s in svcs}
        self.mode: Mode = mode
        self.clock = clock or FakeClock()
        self.max_retries = max_retries
        self.max_attempts = max_attempts
        self.random_seed = random_seed
        self.store = MemoryStore()
        # The proxy's default settings (`proxy.config.Settings`), but for the retry policy: its
        # `max_attempts` counts failures, and jitter would make the fake clock's moves random.
        limits = Limits(
            max_journal_entries=100_000,
            max_entry_bytes=10 * 1024**2,
            retry=RetryPolicy(max_attempts=max_retries + 1, jitter=0.0),
        )
        registry = _Registry(self.services)
        resolve = functools.partial(resolve_in, registry)
        self.machine = Machine(limits, resolve, seed=lambda: self.random_seed, limits_of=self._limits_of)
        #: Every invocation, in the order the runtime learnt of it (started, or created by a call
        #: or send of another).
        self.invocations: dict[str, Invocation] = {}
        self._keys: set[ServiceKey] = set()
        #: State of virtual objects and workflows: (service, key) -> state key -> JSON value.
        self.state = StateView(self.store, self.machine, self._keys)
        #: Durable promises of workflows: (service, key, name) -> (JSON value, rejection).
        self.promises = PromisesView(self.store, self.machine, self._keys)
        self._completers: dict[type, Completer] = {}
        self._hooks: dict[type, list[CommitHook]] = {}
        # Resolutions of awakeables a test gave before the handler created them.
        self._early: dict[str, tuple[bytes | None, Failure | None]] = {}
        # Attempts to run, in commit order: invocation id -> (record, request built at the commit).
        self._launch: dict[str, tuple[InvocationRecord, InvokeRequest]] = {}
        # Invocations backing off: id -> when their retry is due (fake clock).
        self._retries: dict[str, int] = {}
        self._scheduled: list[_Scheduled] = []
        self._order = itertools.count()
        self._counter = 0
        self._busy = False
        # The first exception a commit hook raised, re-raised to the test once its attempt ended.
        self._hook_error: Exception | None = None
        self._ack = _InProcessAck(self)
        # The fake time `run_until` runs to: schedule timers fire only while it is set.
        self._until: int | None = None
        # Default ids of run-time schedules (apart from the invocations' so those stay as they were).
        self._schedule_ids = itertools.count(1)
        self._sync_code_schedules(registry)

    def _sync_code_schedules(self, registry: _Registry) -> None:
        """Create the schedules the services' handlers declare, as the proxy's registration of a
        deployment does (`schedule_rules.declared`, then `Machine.sync_schedules`)."""
        declared = schedule_rules.declared(svc.info() for svc in self.services.values())
        if not declared:
            return
        now, services = self.clock.now_ms(), list(registry.values())
        _, effects = self._write(lambda txn: self.machine.sync_schedules(txn, services, declared, now=now))
        self._apply(effects)

    def _limits_of(self, service: str) -> ServiceLimits | None:
        """The concurrency and rate limits the service's code declares (read live, as `_Registry`
        reads its handlers), by the rule discovery's announcements go through in the proxy."""
        svc = self.services.get(service)
        if svc is None:
            return None
        handlers = {h.name: (h.limit, h.key_limit, h.limit_key) for h in svc.handlers.values()}
        return service_limits(svc.limit, svc.key_limit, handlers)

    # -- public API -----------------------------------------------------------------------------

    def register_completer(self, entry_type: type, completer: Completer) -> None:
        """Complete waited-on entries of `entry_type` with `completer` (see `Completer`).

        With a `SleepEntry` completer, sleep timers no longer fire by themselves: the completer
        decides when each sleep completes, or (returning None) keeps it open.
        """
        self._completers[entry_type] = completer

    def register_commit_hook(self, entry_type: type, hook: CommitHook) -> None:
        """Call `hook` after each new entry of `entry_type` a handler created is committed (see
        `CommitHook`); hooks of one type are called in the order they were registered."""
        self._hooks.setdefault(entry_type, []).append(hook)

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        """Resolve an awakeable as ``POST /restate/awakeables/{id}/resolve`` does. One the handler
        has not created yet is resolved as soon as it is. What it wakes runs at the next `resume`
        (or `start`, `cancel`...).

        Raises:
            ValueError: not an awakeable id, or the awakeable is completed already.
        """
        self._complete_awakeable(awakeable_id, to_json(value), None)

    def reject_awakeable(self, awakeable_id: str, message: str, code: int = 500) -> None:
        """Reject an awakeable: the handler's await raises TerminalError(message, code) (see
        `resolve_awakeable`)."""
        self._complete_awakeable(awakeable_id, None, Failure(code=code, message=message))

    def resolve_promise(self, service: str, key: str, name: str, value: Any = None) -> None:
        """Resolve the durable promise `name` of workflow `service`/`key` from outside, waking the
        handlers that wait on it (they run at the next `resume`, `start`...).

        Raises:
            ValueError: `service` is not a workflow of this runtime, or the promise is completed.
        """
        self._complete_promise(service, key, name, to_json(value), None)

    def reject_promise(self, service: str, key: str, name: str, message: str, code: int = 500) -> None:
        """Reject the durable promise `name` of workflow `service`/`key` from outside."""
        self._complete_promise(service, key, name, None, Failure(code=code, message=message))

    def handler_def(self, service: str | Service, handler: str) -> HandlerDef:
        """The registered handler `service`/`handler` (KeyError with a clear message if unknown)."""
        name = service.name if isinstance(service, Service) else service
        svc = self.services.get(name)
        if svc is None:
            raise KeyError(f"no service {name!r} in this runtime (have: {sorted(self.services)})")
        found = svc.handlers.get(handler)
        if found is None:
            raise KeyError(f"no handler {handler!r} in {name!r} (have: {sorted(svc.handlers)})")
        return found

    async def start(
        self,
        service: str | Service,
        handler: str,
        arg: Any = None,
        *,
        key: str = "",
        headers: dict[str, str] | None = None,
        invocation_id: str | None = None,
        random_seed: int | None = None,
        idempotency_key: str | None = None,
        journal: Iterable[JournalItem] = (),
        crash_at: int | None = None,
    ) -> Invocation:
        """Create an invocation, as an ingress request does, and run until nothing can progress.

        The machine admits it: an exclusive handler of a virtual object (or a workflow's run) whose
        key is held by an invocation that has not completed is left ``"pending"`` and runs once the
        key is free, in arrival order. A workflow's run happens once per key, and an idempotency
        key once per target: starting it again returns the first invocation.

        Args:
            arg: the handler's input (any msgspec-encodable value, or ``msgspec.Raw`` JSON).
            invocation_id: ``inv_`` and letters or digits (default: ``inv_local000001``...).
            idempotency_key: as the ``idempotency-key`` header of an ingress request.
            journal: entries to start from (e.g. a journal exported from production), see
                `Machine.import_journal`.
            crash_at: simulate a crash: the `crash_at`-th entry the handler creates (0-based)
                is not committed and its attempt dies; the invocation then resumes.

        Raises:
            KeyError: unknown service or handler.
            ValueError: a malformed or already used invocation id.
        """
        name = service.name if isinstance(service, Service) else service
        self.handler_def(name, handler)  # fail fast on unknown targets
        self._counter += 1
        new_id = invocation_id or f"inv_local{self._counter:06d}"
        _check_id(new_id)
        if new_id in self.invocations:
            raise ValueError(f"invocation id {new_id!r} is already used")
        now = self.clock.now_ms()
        seed = self.random_seed if random_seed is None else random_seed
        record = self.machine.new_record(
            new_id, name, handler, key, now=now, random_seed=seed, idempotency=idempotency_key, headers=headers
        )
        body, items = to_json(arg), list(journal)

        def invoke(txn: Txn) -> tuple[InvocationRecord, bool, list[Effects]]:
            stored, created, effects = self.machine.invoke(txn, record, body, now=now)
            if not created or not items:
                return stored, created, [effects]
            return stored, created, [effects, self.machine.import_journal(txn, stored.id, items, now=now)]

        stored, created, effects = self._write(invoke)
        if not created:
            return self._track(stored.id)
        inv = self._track(stored.id, crash_at=crash_at)
        for journaled in effects:
            self._apply(journaled)
        self._discover(item.entry for item in items)
        await self._run()
        return inv

    async def call(
        self, service: str | Service, handler: str, arg: Any = None, *, type_hint: Any = Any, **kw: Any
    ) -> Any:
        """`start` the invocation and return its result decoded into `type_hint` (raises like
        `Invocation.result`; ``type_=`` is the deprecated spelling of `type_hint`)."""
        if "type_" in kw:
            warnings.warn("type_= is deprecated, use type_hint= instead", DeprecationWarning, stacklevel=2)
            type_hint = kw.pop("type_")
        inv = await self.start(service, handler, arg, **kw)
        return inv.result(type_hint)

    async def resume(self, inv: Invocation | str) -> Invocation:
        """Run what is ready (after resolving an awakeable or a promise, say).

        The completers are asked again about what a suspended `inv` waits on; a paused `inv` is
        resumed as the proxy's ``PATCH :9070/invocations/{id}/resume`` does (a new attempt, its
        retries counted from zero).
        """
        target = self._get(inv)
        status = target.status
        if status == "paused":
            self._act("resume", target.id)
        elif status == "suspended":
            await self._consult(target)
        await self._run()
        return target

    async def cancel(self, inv: Invocation | str) -> Invocation:
        """Cancel an invocation as the proxy's ``PATCH :9070/invocations/{id}/cancel`` does.

        The invocations its open calls started are cancelled first. Then the handler runs again
        and gets a TerminalError (409) at its first new operation, so its compensation runs. An
        invocation still pending for its key (or scheduled) completes as cancelled without running.

        Raises:
            ValueError: the invocation has already completed.
        """
        target = self._get(inv)
        self._act("cancel", target.id)
        await self._run()
        return target

    async def kill(self, inv: Invocation | str) -> Invocation:
        """Kill an invocation as the proxy's ``PATCH :9070/invocations/{id}/kill`` does: it completes
        at once with a 409 failure and no handler code of it runs again; so do its open calls.

        Raises:
            ValueError: the invocation has already completed.
        """
        target = self._get(inv)
        self._act("kill", target.id)
        await self._run()
        return target

    # -- schedules and time -------------------------------------------------------------------------

    def create_schedule(
        self,
        service: str | Service,
        handler: str,
        arg: Any = None,
        *,
        id: str | None = None,
        key: str = "",
        cron: str = "",
        timezone: str = "UTC",
        every: float | dt.timedelta | None = None,
        overlap: Overlap = "skip",
        catch_up: CatchUp = "skip",
        paused: bool = False,
    ) -> ScheduleRecord:
        """Create a schedule as ``POST :9070/schedules`` does: `handler` is started with `arg` on
        the cron expression `cron` (in `timezone`) or `every` seconds, the first fire after now.
        Its fires run within `run_until` / `advance`.

        Args:
            id: the schedule's id (default: ``sch_local000001``...).
            every: the interval, in seconds or as a timedelta (instead of `cron`).
            overlap: what a fire does while the previous fire's invocation runs.
            catch_up: what fires missed (later than the grace) do.

        Raises:
            KeyError: unknown service or handler.
            ValueError: a bad id, spec, key or input, or the id is taken.
        """
        name = service.name if isinstance(service, Service) else service
        self.handler_def(name, handler)  # fail fast on unknown targets
        schedule = ScheduleRecord(
            id=id if id is not None else f"sch_local{next(self._schedule_ids):06d}",
            service=name, handler=handler, key=key, cron=cron.strip(), timezone=timezone,
            every_ms=_interval_ms(every),
            input=to_json(arg), overlap=overlap, catch_up=catch_up, paused=paused,
        )  # fmt: skip
        now = self.clock.now_ms()
        try:
            created, effects = self._write(lambda txn: self.machine.create_schedule(txn, schedule, now=now))
        except (BadRequest, Conflict) as exc:
            raise ValueError(exc.message) from None
        self._apply(effects)
        return created

    def delete_schedule(self, schedule_id: str) -> ScheduleRecord:
        """Remove a schedule and its timer (fires already started go on); KeyError if none."""
        try:
            return self._write(lambda txn: self.machine.delete_schedule(txn, schedule_id))
        except NotFound as exc:
            raise KeyError(exc.message) from None

    def pause_schedule(self, schedule_id: str) -> ScheduleRecord:
        """Pause a schedule: it fires no more until resumed; KeyError if none."""
        return self._set_paused(schedule_id, True)

    def resume_schedule(self, schedule_id: str) -> ScheduleRecord:
        """Resume a schedule: its next fire is the first after now (fires while it was paused are
        not caught up); KeyError if none."""
        return self._set_paused(schedule_id, False)

    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule (code ones ``code:{service}:{handler}`` included), by id."""
        with self.store.read() as txn:
            return self.machine.schedules(txn)

    def schedule(self, schedule_id: str) -> ScheduleRecord:
        """One schedule as stored now (its counters, next fire...); KeyError if none."""
        with self.store.read() as txn:
            try:
                return self.machine.schedule(txn, schedule_id)
            except NotFound as exc:
                raise KeyError(exc.message) from None

    async def run_until(self, at: int | dt.datetime) -> None:
        """Move the fake clock to `at` (epoch ms, or an aware datetime), carrying out everything
        due on the way in time order: retries, timers, completions and schedule fires (each fire
        an ordinary invocation, run in process). Stops there: what is due later waits.

        Raises:
            ValueError: `at` is before the fake clock's now.
            RuntimeError: called from a handler, completer or hook.
        """
        until = round(at.timestamp() * 1000) if isinstance(at, dt.datetime) else at
        if until < self.clock.now_ms():
            raise ValueError(f"run_until({until}) is before the fake clock's now ({self.clock.now_ms()})")
        if self._busy:
            raise RuntimeError("run_until cannot be called while the runtime runs (from a handler or hook)")
        self._until = until
        try:
            await self._run()
        finally:
            self._until = None
        if self.clock.now_ms() < until:
            self.clock.advance_to(until)

    async def advance(self, seconds: float) -> None:
        """`run_until` the fake clock's now plus `seconds`."""
        await self.run_until(self.clock.now_ms() + round(seconds * 1000))

    def _set_paused(self, schedule_id: str, paused: bool) -> ScheduleRecord:
        now = self.clock.now_ms()
        try:
            changed, effects = self._write(lambda txn: self.machine.pause_schedule(txn, schedule_id, paused, now=now))
        except NotFound as exc:
            raise KeyError(exc.message) from None
        self._apply(effects)
        return changed

    # -- the shell: commits and their effects -----------------------------------------------------

    def _write(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn` in one write transaction and commit it; nothing of it stays if it raises."""
        txn = self.store.begin()
        try:
            result = fn(txn)
        except BaseException:
            txn.abort()
            raise
        txn.commit()
        return result

    def _get(self, inv: Invocation | str) -> Invocation:
        if isinstance(inv, Invocation):
            return inv
        found = self.invocations.get(inv)
        if found is None:
            raise KeyError(f"no invocation {inv!r} in this runtime")
        return found

    def _track(self, invocation_id: str, crash_at: int | None = None) -> Invocation:
        """The `Invocation` of a stored invocation, made when the runtime first learns of it."""
        inv = self.invocations.get(invocation_id)
        if inv is None:
            inv = self.invocations[invocation_id] = Invocation(self.store, self.machine, invocation_id, crash_at)
            if inv.keyed:
                self._keys.add((inv.service, inv.key))
        return inv

    def _apply(self, effects: Effects) -> None:
        """Carry out what a commit asked for: queue the attempts it started, note its retries.

        Nothing waits for results in process and the timers are read from the store whenever the
        runtime runs out of work, so `Effects.completed` and `Effects.wake_at` need nothing.
        """
        for record in effects.launch:
            self._retries.pop(record.id, None)
            self._queue(record)
        for record in effects.retry:
            self._retries[record.id] = record.next_retry_ms
        for record in effects.completed:
            self._retries.pop(record.id, None)

    def _queue(self, record: InvocationRecord) -> None:
        """Queue the committed attempt `record` describes, with its request built now from the
        store, as the proxy builds it when it sends the attempt right after the commit."""
        self._track(record.id)
        with self.store.read() as txn:
            rows = self.machine.journal(txn, record.id)
            body = self.machine.input(txn, record.id)
            state = self.machine.state(txn, record.service, record.key) if record.keyed else {}
        request = InvokeRequest(
            invocation_id=record.id,
            service=record.service,
            handler=record.handler,
            key=record.key,
            input=msgspec.Raw(body),
            journal=[decode_item(row) for row in rows],
            attempt=record.attempt,
            token=record.token,
            callback_url=_CALLBACK_URL if self.mode == "ack" else "",
            random_seed=record.random_seed,
            headers=record.headers,
            cancelled=record.cancelled,
            state={k: msgspec.Raw(v) for k, v in state.items()},
        )
        # A later attempt of the same invocation supersedes a queued one; it runs in commit order.
        self._launch.pop(record.id, None)
        self._launch[record.id] = (record, request)

    def _act(self, action: Action, invocation_id: str) -> None:
        now = self.clock.now_ms()
        try:
            _, effects = self._write(lambda txn: self.machine.act(txn, action, invocation_id, now=now))
        except Conflict as exc:
            raise ValueError(exc.message) from None
        self._apply(effects)

    def _complete_awakeable(
        self, awakeable: str, value: bytes | None, failure: Failure | None, *, remember: bool = True
    ) -> None:
        """`Machine.complete_awakeable`; one not found is remembered (if `remember`) for later."""
        now = self.clock.now_ms()
        try:
            effects = self._write(
                lambda txn: self.machine.complete_awakeable(txn, awakeable, now=now, value=value, failure=failure)
            )
        except NotFound:
            if remember:
                # Not created yet (as far as the store knows): applied once its entry is journaled.
                self._early[awakeable] = (value, failure)
            return
        except (BadRequest, Conflict) as exc:
            raise ValueError(exc.message) from None
        self._apply(effects)

    def _apply_early(self) -> None:
        """Apply the resolutions given before their awakeable existed, to those that exist now."""
        for awakeable, (value, failure) in list(self._early.items()):
            parsed = parse_awakeable_id(awakeable)
            assert parsed is not None  # complete_awakeable refused the others
            with self.store.read() as txn:
                exists = read_entry(txn, *parsed) is not None
            if not exists:
                continue
            del self._early[awakeable]
            try:
                # An entry there that is no awakeable is not found again, and then forgotten.
                self._complete_awakeable(awakeable, value, failure, remember=False)
            except ValueError:
                pass  # completed already: the test's resolution came second

    def _complete_promise(
        self, service: str, key: str, name: str, value: bytes | None, failure: Failure | None
    ) -> None:
        svc = self.services.get(service)
        if svc is None or svc.type != "workflow":
            raise ValueError(f"{service!r} is not a workflow of this runtime: durable promises exist only in workflows")
        now = self.clock.now_ms()
        try:
            effects = self._write(
                lambda txn: self.machine.complete_promise(
                    txn, service, key, name, now=now, value=value, failure=failure
                )
            )
        except Conflict as exc:
            raise ValueError(exc.message) from None
        self._keys.add((service, key))
        self._apply(effects)

    def _discover(self, entries: Iterable[Entry]) -> None:
        """Track the invocations that the call and send `entries` (just journaled) created."""
        for entry in entries:
            if isinstance(entry, CallEntry | SendEntry):
                # None for a call the machine refused, or a send of a workflow run that exists.
                with self.store.read() as txn:
                    child = read_record(txn, entry.invocation_id)
                if child is not None:
                    self._track(child.id)

    def _journaled(self, inv: Invocation, items: list[JournalItem]) -> None:
        """The handler's new entries `items` (as journaled) were committed: note them, then tell
        the hooks, then apply the early resolutions of awakeables among them."""
        if not items:
            return
        inv.commit_log.extend(item.index for item in items)
        self._discover(item.entry for item in items)
        inv.sends.extend(item.entry.invocation_id for item in items if isinstance(item.entry, SendEntry))
        for item in items:
            for hook in self._hooks.get(type(item.entry), ()):
                try:
                    hook(self, inv, item.index, item.entry)
                except Exception as exc:  # noqa: BLE001 - the test's bug, shown to the test, not the handler
                    self._hook_error = self._hook_error or exc
        if self._early:
            self._apply_early()

    # -- attempts ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Carry out the queued attempts, then what time brings, until nothing can progress.

        Attempts run one at a time, in the order they were committed, except that an invocation
        whose attempt just ended goes on at once with its next one (suspend mode re-invokes after
        every step): each invocation runs as far as it can before the next one starts, so a
        test's order of events does not depend on the mode.
        """
        if self._busy:
            return  # called from a handler or a completer: the loop already running picks it up
        self._busy = True
        last = ""
        try:
            while True:
                if self._launch:
                    last = last if last in self._launch else next(iter(self._launch))
                    record, request = self._launch.pop(last)
                    await self._attempt(record, request)
                elif not self._wait_for_time():
                    return
                if self._hook_error is not None:
                    error, self._hook_error = self._hook_error, None
                    raise error
        finally:
            self._busy = False

    async def _attempt(self, record: InvocationRecord, request: InvokeRequest) -> None:
        """Send one attempt to the handler and have the machine settle its outcome."""
        if not self._is_current(record):
            return  # superseded (killed, completed, or a newer attempt) since it was queued
        inv = self._track(record.id)
        inv.attempts += 1
        if inv.attempts > self.max_attempts:
            raise AttemptFailedError(f"{inv.id}: more than {self.max_attempts} attempts")
        number = inv.attempts
        observed = inv.steps.instrument(self.handler_def(record.service, record.handler), number)
        outcome = await run_attempt(
            observed, request, self.mode, self._ack, clock=self.clock, on_allocate=inv.steps.on_allocate
        )
        if inv.crashed_attempt == number or self._crash_in(inv, record, outcome, number):
            # The attempt died: its outcome never reaches the proxy, which starts the next
            # attempt as after a restart (no retry is counted).
            self._begin(inv.id, ("running",))
            return
        self._settle(inv, record, outcome)
        if inv.status == "suspended":
            await self._consult(inv)

    def _is_current(self, record: InvocationRecord) -> bool:
        """True if the attempt `record` describes is the invocation's current one, as stored."""
        with self.store.read() as txn:
            stored = self.machine.get(txn, record.id)
        return stored.status == "running" and (stored.attempt, stored.token) == (record.attempt, record.token)

    def _settle(self, inv: Invocation, record: InvocationRecord, outcome: Outcome) -> None:
        now, next_token = self.clock.now_ms(), new_token()
        indexes = [item.index for item in outcome.entries]

        def settle(txn: Txn) -> tuple[Effects, Outcome | AttemptFailure, list[JournalItem]]:
            before = {i for i in indexes if read_entry(txn, inv.id, i) is not None}
            _, effects, applied = self.machine.settle(
                txn, inv.id, record.attempt, record.token, outcome, now=now, next_token=next_token
            )
            return effects, applied, _journaled_items(txn, inv.id, [i for i in indexes if i not in before])

        try:
            effects, applied, new = self._write(settle)
        except Fenced as exc:
            if not self._is_current(record):
                return  # a stale attempt: the proxy drops its outcome too
            raise AttemptFailedError(f"{inv.id}: {exc.message} (the proxy refuses this outcome)") from None
        if isinstance(applied, AttemptFailure):
            failure = applied.failure
            applied = Errored(code=failure.code, message=failure.message, retry_after_ms=applied.retry_after_ms)
        inv.settled(applied)
        self._apply(effects)
        self._journaled(inv, new)

    def _append(self, request: AppendRequest) -> Entry | None:
        """One step ack of the current attempt: `Machine.append` in its own commit."""
        inv = self.invocations.get(request.invocation_id)
        if inv is None:
            raise AckRejected(404, b"unknown invocation")
        if inv.crashed_attempt and inv.crashed_attempt == inv.attempts:
            raise AckRejected(409, b"attempt killed by a simulated crash")
        item = JournalItem(index=request.index, entry=request.entry)
        if inv.crash_pending and len(inv.commit_log) == inv.crash_at and not inv.is_journaled(item.index):
            inv.crashed(inv.attempts)
            raise AckRejected(409, b"simulated crash before the commit")
        now = self.clock.now_ms()

        def append(txn: Txn) -> tuple[list[JournalItem], Effects, Entry | None]:
            new = read_entry(txn, inv.id, item.index) is None  # else an identical re-send
            self.machine.check_entry_size(item, inv.id)
            effects, journaled = self.machine.append(txn, inv.id, request.attempt, request.token, item, now=now)
            return _journaled_items(txn, inv.id, [item.index] if new else []), effects, journaled

        try:
            items, effects, journaled = self._write(append)
        except ProxyError as exc:
            raise AckRejected(exc.status, exc.body("admin")) from None
        self._apply(effects)
        self._journaled(inv, items)
        return journaled

    def _crash_in(self, inv: Invocation, record: InvocationRecord, outcome: Outcome, number: int) -> bool:
        """Suspend mode: True if the injected crash falls among the new entries `outcome` carries.

        The entries before the crash position are committed (as acks of the attempt), the rest
        are dropped with the outcome.
        """
        if not inv.crash_pending or inv.crash_at is None:
            return False
        new = [item for item in outcome.entries if not inv.is_journaled(item.index)]
        position = inv.crash_at - len(inv.commit_log)
        if position >= len(new):
            return False
        now = self.clock.now_ms()
        for item in new[:position]:

            def append(txn: Txn, item: JournalItem = item) -> tuple[Effects, list[JournalItem]]:
                effects, _ = self.machine.append(txn, inv.id, record.attempt, record.token, item, now=now)
                return effects, _journaled_items(txn, inv.id, [item.index])

            try:
                effects, items = self._write(append)
            except ProxyError:
                break  # refused: so would the outcome have been; the crash comes first
            self._apply(effects)
            self._journaled(inv, items)
        inv.crashed(number)
        return True

    def _begin(self, invocation_id: str, statuses: tuple[Status, ...]) -> bool:
        """Start a new attempt (`Machine.begin_attempt`) if the invocation is in one of `statuses`."""
        now, token = self.clock.now_ms(), new_token()

        def begin(txn: Txn) -> InvocationRecord | None:
            if self.machine.get(txn, invocation_id).status not in statuses:
                return None
            return self.machine.begin_attempt(txn, invocation_id, now=now, token=token)

        record = self._write(begin)
        if record is not None:
            self._queue(record)
        return record is not None

    # -- completions and time ---------------------------------------------------------------------

    async def _consult(self, inv: Invocation) -> None:
        """Ask the test's completers about the entries suspended `inv` waits on; apply what they
        complete now, schedule what they complete later."""
        if not self._completers:
            return
        journal = inv.journal
        for index in inv.waiting_on:
            entry = journal.get(index)
            completer = self._completers.get(type(entry)) if entry is not None else None
            if completer is None:
                continue
            completion = await completer(self, inv, index, entry)
            if completion is None:
                continue
            value, failure = completion_result(completion.entry)
            now = self.clock.now_ms()
            at = now if completion.at_ms is None else completion.at_ms
            scheduled = _Scheduled(at, next(self._order), inv.id, index, value, failure)
            if at <= now:
                self._complete(scheduled)
            else:
                heapq.heappush(self._scheduled, scheduled)

    def _complete(self, scheduled: _Scheduled) -> None:
        """Apply a test-supplied completion through the machine's completion path."""
        now, at = self.clock.now_ms(), scheduled
        try:
            effects = self._write(
                lambda txn: self.machine.complete_entry(
                    txn, at.invocation_id, at.index, now=now, value=at.value, failure=at.failure
                )
            )
        except (NotFound, Conflict, BadRequest):
            return  # completed meanwhile (or its invocation): as a late completion, it is moot
        self._apply(effects)

    def _timers(self, now: int) -> tuple[list[TimerFire], int | None]:
        """The timers the runtime fires itself that are due by `now`, and when the next one is.

        With a test's `SleepEntry` completer, sleeps are its business: only delayed starts fire.
        Schedule timers fire only up to the time `run_until` runs to.
        """
        with self.store.read() as txn:
            fires, _ = self.machine.due_timers(txn, _FOREVER, sys.maxsize)
        own = [fire for fire in fires if self._fires_itself(fire)]
        later = next((fire.due_ms for fire in own if fire.due_ms > now), None)
        return [fire for fire in own if fire.due_ms <= now], later

    def _fires_itself(self, fire: TimerFire) -> bool:
        if fire.index == schedule_rules.SCHEDULE_INDEX:
            # A schedule re-arms forever: run until idle would never end with it.
            return self._until is not None and fire.due_ms <= self._until
        return SleepEntry not in self._completers or fire.index == START_INDEX

    def _wait_for_time(self) -> bool:
        """With no attempt to run: move the fake clock to the earliest retry, timer or scheduled
        completion and carry out everything due then. False if there is nothing left to wait for."""
        now = self.clock.now_ms()
        due, later = self._timers(now)
        times = [*self._retries.values(), *(s.at_ms for s in self._scheduled)]
        if due:
            times.append(now)
        elif later is not None:
            times.append(later)
        if self._until is not None:
            times = [at for at in times if at <= self._until]  # later ones wait for a later run
        if not times:
            return False
        self.clock.advance_to(min(times))
        now = self.clock.now_ms()
        for invocation_id, at_ms in sorted(self._retries.items(), key=lambda retry: retry[1]):
            if at_ms <= now:
                del self._retries[invocation_id]
                if self._begin(invocation_id, ("backing-off",)):
                    self.invocations[invocation_id].retries += 1
        due, _ = self._timers(now)
        if due:
            effects, _ = self._write(lambda txn: self.machine.fire_timers(txn, due, now=now))
            self._apply(effects)
        while self._scheduled and self._scheduled[0].at_ms <= now:
            self._complete(heapq.heappop(self._scheduled))
        return True


def _interval_ms(every: float | dt.timedelta | None) -> int:
    """An interval in ms (0: none); one of 0 or less stays below 1 ms, which the rule refuses."""
    if every is None:
        return 0
    seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
    return max(1, round(seconds * 1000)) if seconds > 0 else -1


def _journaled_items(txn: ReadTxn, invocation_id: str, indexes: Iterable[int]) -> list[JournalItem]:
    """The entries at `indexes` as journaled (the indexes that hold one)."""
    items: list[JournalItem] = []
    for index in indexes:
        entry = read_entry(txn, invocation_id, index)
        if entry is not None:
            items.append(JournalItem(index=index, entry=entry))
    return items
