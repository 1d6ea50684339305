"""The handler's view of its invocation: durable steps and deterministic helpers."""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

import msgspec

from handlers_sdk.clock import Clock
from handlers_sdk.errors import JournalMismatchError, TerminalError
from handlers_sdk.futures import DurableFuture
from handlers_sdk.protocol import (
    NULL,
    AwakeableEntry,
    CallEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    Entry,
    Failure,
    GetStateEntry,
    PromiseCompleteEntry,
    PromiseGetEntry,
    PromisePeekEntry,
    RunEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    StateKeysEntry,
    awakeable_id,
    child_invocation_id,
)
from handlers_sdk.serde import from_json, to_json

if TYPE_CHECKING:
    from handlers_sdk.attempt import Attempt
    from handlers_sdk.service import HandlerDef

__all__ = [
    "CallFuture",
    "Context",
    "DurablePromise",
    "ObjectContext",
    "ObjectSharedContext",
    "RunOptions",
    "SendHandle",
    "WorkflowContext",
    "WorkflowSharedContext",
    "context_for",
]

T = TypeVar("T")
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class RunOptions:
    """Retry policy of one `ctx.run` step, as Restate's ``RunOptions``.

    With no field set, a failing step fails the attempt and the proxy retries the whole
    invocation with its own policy. With any field set, the step is retried in place, and once
    `max_attempts` or `max_duration` is exhausted it fails terminally (the failure is journaled).
    """

    max_attempts: int | None = None
    max_duration: timedelta | None = None
    initial_retry_interval: timedelta = timedelta(milliseconds=50)
    max_retry_interval: timedelta = timedelta(seconds=10)
    retry_interval_factor: float = 2.0

    def retries_in_place(self) -> bool:
        """True when the step retries itself rather than failing the attempt."""
        return self.max_attempts is not None or self.max_duration is not None


_return_types: dict[Any, Any] = {}


def _return_type(fn: Callable[..., Any]) -> Any:
    """The annotated return type of `fn` (cached), used to decode its journaled value."""
    try:
        return _return_types[fn]
    except (KeyError, TypeError):
        pass
    try:
        hint = get_type_hints(fn).get("return", Any)
    except Exception:  # noqa: BLE001 - unresolvable annotations just mean "plain JSON"
        hint = Any
    if hint is None or hint is type(None):
        hint = Any
    try:
        _return_types[fn] = hint
    except TypeError:  # unhashable callable
        pass
    return hint


class CallFuture(DurableFuture[T]):
    """The result of a call to another handler; `invocation_id` is the child's id."""

    def __init__(self, attempt: Attempt, index: int, result_type: Any, invocation_id: str) -> None:
        super().__init__(attempt, index, result_type)
        self.invocation_id = invocation_id


@dataclass(frozen=True)
class SendHandle:
    """A one-way call that has been journaled (or will be, before the attempt ends)."""

    invocation_id: str


def _target_of(handler: Any) -> tuple[str, str, Any]:
    """(service, handler, return type) of a handler function registered on a Service."""
    target = getattr(handler, "__durable_target__", None)
    if target is None:
        raise TypeError(
            "expected a handler function registered with @service.handler(); "
            "use generic_call/generic_send with service and handler names otherwise"
        )
    service, name = target
    return service, name, _return_type(handler)


def _caller_source() -> str:
    """``file:line`` of the user code calling into the SDK (taken when `run` is called: inside a
    gather, the frame that later runs the coroutine is the event loop's)."""
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("handlers_sdk"):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _ms(duration: timedelta) -> int:
    """Whole milliseconds of `duration`, exactly (through float seconds, 1001 ms would be 1000)."""
    return duration // _MILLISECOND


async def _seconds(clock: Clock) -> float:
    """The step body of ``ctx.time()``: the attempt's clock in seconds."""
    return clock.now_ms() / 1000


class Context:
    """Passed to every handler: durable steps, timers, calls, awakeables, replay-safe helpers.

    Time comes from the attempt's clock (`Attempt.clock`: the system clock in a handler service,
    the fake one under the toolkit's `LocalRuntime`): timers' deadlines, ``ctx.time()`` and the
    timestamps of steps.
    """

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        request = attempt.request
        self._random = random.Random(request.random_seed)

    @property
    def invocation_id(self) -> str:
        """The id of this invocation (``inv_...``)."""
        return self._attempt.request.invocation_id

    @property
    def headers(self) -> dict[str, str]:
        """Headers the ingress request carried (minus hop-by-hop ones)."""
        return self._attempt.request.headers

    def random(self) -> random.Random:
        """A random generator seeded per invocation: the same sequence on every replay."""
        return self._random

    def uuid(self) -> uuid.UUID:
        """A UUID drawn from `random()`: the same on every replay."""
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        options: RunOptions | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Run `fn(*args, **kwargs)` once, durably, and return its (JSON round-tripped) value.

        Use as ``await ctx.run("charge", charge, order_id)``. Sync functions run in a worker
        thread. On replay the journaled value is returned without calling `fn`. The value is
        decoded into `fn`'s annotated return type when it has one.

        Raises:
            TerminalError: `fn` raised one, or in-place retries were exhausted.
            JournalMismatchError: the journal holds another operation at this position.
        """
        return self._run(_Step(name, fn, args, kwargs, options, _caller_source()))

    async def _run(self, step: _Step) -> Any:
        attempt = self._attempt
        index = attempt.replay.allocate()
        result_type = _return_type(step.fn)
        recorded = self._match(index, RunEntry(name=step.name))
        if recorded is None:
            attempt.check_cancelled(index)
            await attempt.barrier()
            attempt.step_started()
            try:
                entry = await step.execute(attempt.clock)
            finally:
                attempt.step_finished()
            recorded = await attempt.commit(index, entry)
        assert isinstance(recorded, RunEntry)
        if recorded.failure is not None:
            raise TerminalError(recorded.failure.message, recorded.failure.code)
        try:
            return from_json(recorded.value, result_type)
        except msgspec.ValidationError as exc:
            message = f"step {step.name!r}: journaled value does not fit {result_type}: {exc}"
            raise TerminalError(message) from None

    def _match(self, index: int, attempted: Entry) -> Entry | None:
        # Where an earlier attempt raised the cancellation, a replay raises it again.
        self._attempt.cancel_reached(index)
        try:
            return self._attempt.replay.match(index, attempted)
        except JournalMismatchError as exc:
            # Remembered so that user code catching it cannot turn a mismatch into success.
            self._attempt.mismatch = exc
            raise

    def _journal(self, attempted: Entry) -> int:
        """Allocate an index for a proxy-completed operation and journal it if it is new."""
        index = self._attempt.replay.allocate()
        if self._match(index, attempted) is None:
            self._attempt.check_cancelled(index)
            self._attempt.append(index, attempted)
        return index

    async def time(self) -> float:
        """The wall clock in seconds (millisecond resolution), journaled: the same value on every replay."""
        value: float = await self.run("ctx.time", _seconds, self._attempt.clock)
        return value

    def sleep(self, duration: timedelta, name: str = "") -> DurableFuture[None]:
        """A durable timer: ``await ctx.sleep(timedelta(days=3))`` suspends the handler (it holds
        no request, task or memory) and the proxy re-invokes it when the time has come, also
        across restarts. Can be combined with `select` as a timeout."""
        wake_at = self._attempt.clock.now_ms() + max(0, _ms(duration))
        index = self._journal(SleepEntry(name=name, wake_at_ms=wake_at))
        return DurableFuture(self._attempt, index)

    def generic_call(
        self, service: str, handler: str, arg: Any = None, *, key: str = "", result_type: Any = Any
    ) -> CallFuture[Any]:
        """Call `service`/`handler` (of any deployment) and get a future of its result.

        The caller suspends while it waits. A terminal failure of the callee raises TerminalError
        in the caller. The child's id is derived from this invocation and the journal index, so
        a replay never starts it twice.
        """
        index = self._attempt.replay.next_index
        child = child_invocation_id(self.invocation_id, index)
        attempted = CallEntry(
            service=service, handler=handler, key=key, input=msgspec.Raw(to_json(arg)), invocation_id=child
        )
        self._journal(attempted)
        return CallFuture(self._attempt, index, result_type, child)

    def service_call(self, handler: Callable[..., Any], arg: Any = None) -> CallFuture[Any]:
        """Call a handler function of a Service: ``await ctx.service_call(greet, "Ada")``."""
        service, name, result_type = _target_of(handler)
        return self.generic_call(service, name, arg, result_type=result_type)

    def generic_send(
        self, service: str, handler: str, arg: Any = None, *, key: str = "", send_delay: timedelta | None = None
    ) -> SendHandle:
        """Start `service`/`handler` without waiting for it, optionally after `send_delay` (durable
        like a timer)."""
        index = self._attempt.replay.next_index
        child = child_invocation_id(self.invocation_id, index)
        delay_ms = _ms(send_delay) if send_delay else 0
        attempted = SendEntry(
            service=service,
            handler=handler,
            key=key,
            input=msgspec.Raw(to_json(arg)),
            invocation_id=child,
            delay_ms=max(0, delay_ms),
        )
        self._journal(attempted)
        return SendHandle(child)

    def service_send(
        self, handler: Callable[..., Any], arg: Any = None, *, send_delay: timedelta | None = None
    ) -> SendHandle:
        """One-way call of a handler function of a Service."""
        service, name, _ = _target_of(handler)
        return self.generic_send(service, name, arg, send_delay=send_delay)

    def awakeable(self, result_type: Any = Any) -> tuple[str, DurableFuture[Any]]:
        """A promise completed from outside: hand the id to the world (inside a ``ctx.run``), then
        await the future. ``POST /restate/awakeables/{id}/resolve`` (JSON body) or ``/reject``
        (text body) completes it."""
        index = self._attempt.replay.next_index
        awk = awakeable_id(self.invocation_id, index)
        self._journal(AwakeableEntry(id=awk))
        return awk, DurableFuture(self._attempt, index, result_type)

    def object_call(self, handler: Callable[..., Any], key: str, arg: Any = None) -> CallFuture[Any]:
        """Call a handler of a VirtualObject for `key`."""
        service, name, result_type = _target_of(handler)
        return self.generic_call(service, name, arg, key=key, result_type=result_type)

    def object_send(
        self, handler: Callable[..., Any], key: str, arg: Any = None, *, send_delay: timedelta | None = None
    ) -> SendHandle:
        """One-way call of a VirtualObject handler for `key`."""
        service, name, _ = _target_of(handler)
        return self.generic_send(service, name, arg, key=key, send_delay=send_delay)

    def workflow_call(self, handler: Callable[..., Any], key: str, arg: Any = None) -> CallFuture[Any]:
        """Call a handler of a Workflow for `key`.

        Its run handler runs once per key: calling the run of a key whose run already exists
        raises a `TerminalError` (409) when awaited.
        """
        return self.object_call(handler, key, arg)

    def workflow_send(
        self, handler: Callable[..., Any], key: str, arg: Any = None, *, send_delay: timedelta | None = None
    ) -> SendHandle:
        """One-way call of a Workflow handler for `key` (a no-op for the run of a key whose run exists)."""
        return self.object_send(handler, key, arg, send_delay=send_delay)


class ObjectSharedContext(Context):
    """Context of a shared object handler (and base of the others): the key and state reads."""

    def key(self) -> str:
        """The key of the virtual object (or workflow) this invocation runs for."""
        return self._attempt.request.key

    async def get(self, name: str, type_hint: Any = Any) -> Any:
        """The value of state key `name` (None if unset), journaled so replays see the same."""
        attempt = self._attempt
        index = attempt.replay.allocate()
        recorded = self._match(index, GetStateEntry(key=name))
        if recorded is None:
            raw = attempt.state.get(name)
            recorded = GetStateEntry(key=name, found=raw is not None, value=msgspec.Raw(raw) if raw else NULL)
            attempt.append(index, recorded)
        assert isinstance(recorded, GetStateEntry)
        return from_json(recorded.value, type_hint) if recorded.found else None

    async def state_keys(self) -> list[str]:
        """The names of all state keys, journaled."""
        attempt = self._attempt
        index = attempt.replay.allocate()
        recorded = self._match(index, StateKeysEntry())
        if recorded is None:
            recorded = StateKeysEntry(keys=sorted(attempt.state))
            attempt.append(index, recorded)
        assert isinstance(recorded, StateKeysEntry)
        return list(recorded.keys)


class ObjectContext(ObjectSharedContext):
    """Context of an exclusive object handler: state reads and writes.

    Each write is a journal entry, applied to the stored state in the same transaction that
    journals it (so a state change and its entry are never apart), and visible to shared
    handlers from then on.
    """

    def _mutate(self, attempted: Entry) -> bool:
        """Journal a state write; True if it is new (a replayed write is already in the eager
        state this attempt received, so it must not be applied to the local view again)."""
        attempt = self._attempt
        index = attempt.replay.allocate()
        if self._match(index, attempted) is not None:
            return False
        attempt.check_cancelled(index)
        attempt.append(index, attempted)
        return True

    def set(self, name: str, value: Any) -> None:
        """Set state key `name` to `value` (any JSON-serialisable value)."""
        raw = to_json(value)
        if self._mutate(SetStateEntry(key=name, value=msgspec.Raw(raw))):
            self._attempt.state[name] = raw

    def clear(self, name: str) -> None:
        """Remove state key `name`."""
        if self._mutate(ClearStateEntry(key=name)):
            self._attempt.state.pop(name, None)

    def clear_all(self) -> None:
        """Remove every state key."""
        if self._mutate(ClearAllStateEntry()):
            self._attempt.state.clear()


class DurablePromise:
    """A named promise of a workflow key: awaited by one handler, resolved by another."""

    def __init__(self, ctx: Context, name: str, type_hint: Any = Any) -> None:
        self._ctx = ctx
        self.name = name
        self._type = type_hint

    def value(self) -> DurableFuture[Any]:
        """A future of the promise's value: ``await ctx.promise("email-link").value()``."""
        index = self._ctx._journal(PromiseGetEntry(name=self.name))
        return DurableFuture(self._ctx._attempt, index, self._type)

    async def peek(self) -> Any:
        """The value if the promise is resolved, else None (a rejected one raises TerminalError)."""
        index = self._ctx._journal(PromisePeekEntry(name=self.name))
        return await DurableFuture(self._ctx._attempt, index, self._type)

    def resolve(self, value: Any) -> DurableFuture[None]:
        """Resolve the promise; awaiting the result raises TerminalError (409) if it was already
        completed."""
        entry = PromiseCompleteEntry(name=self.name, resolution=msgspec.Raw(to_json(value)))
        index = self._ctx._journal(entry)
        return DurableFuture(self._ctx._attempt, index)

    def reject(self, message: str, status_code: int = 500) -> DurableFuture[None]:
        """Reject the promise: its waiters get a TerminalError."""
        entry = PromiseCompleteEntry(name=self.name, rejection=Failure(code=status_code, message=message))
        index = self._ctx._journal(entry)
        return DurableFuture(self._ctx._attempt, index)


class WorkflowSharedContext(ObjectSharedContext):
    """Context of a workflow's shared handlers: state reads and durable promises."""

    def promise(self, name: str, type_hint: Any = Any) -> DurablePromise:
        """The durable promise `name` of this workflow key."""
        return DurablePromise(self, name, type_hint)


class WorkflowContext(ObjectContext, WorkflowSharedContext):
    """Context of a workflow's run handler: state reads and writes, durable promises."""


def context_for(handler: HandlerDef, attempt: Attempt) -> Context:
    """The context object a handler receives, by service type and handler kind."""
    if handler.service_type == "object":
        return ObjectContext(attempt) if handler.kind == "exclusive" else ObjectSharedContext(attempt)
    if handler.service_type == "workflow":
        return WorkflowContext(attempt) if handler.kind == "workflow" else WorkflowSharedContext(attempt)
    return Context(attempt)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call `fn`; sync functions go to a worker thread so they never block the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


@dataclass(frozen=True, slots=True)
class _Step:
    """One `ctx.run` call: the body to run, its retry policy, and where it was called from."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: RunOptions | None
    source: str

    async def execute(self, clock: Clock) -> RunEntry:
        """Run the body with its retry policy and turn the result into a journal entry, stamped
        with when the step started and how long it took on `clock` (the admin UI's timeline)."""
        started_ms = clock.now_ms()
        began = clock.monotonic()
        entry = await self._execute_untimed()
        duration_ms = int((clock.monotonic() - began) * 1000)
        return msgspec.structs.replace(entry, started_ms=started_ms, duration_ms=duration_ms)

    def _failed(self, code: int, message: str) -> RunEntry:
        return RunEntry(name=self.name, failure=Failure(code=code, message=message), source=self.source)

    async def _execute_untimed(self) -> RunEntry:
        options = self.options
        loop = asyncio.get_running_loop()
        started = loop.time()
        tries = 0
        delay = options.initial_retry_interval.total_seconds() if options else 0.0
        while True:
            tries += 1
            try:
                value = await _call(self.fn, self.args, self.kwargs)
            except TerminalError as exc:
                return self._failed(exc.status_code, exc.message)
            except Exception as exc:
                if options is None or not options.retries_in_place():
                    raise
                out_of_tries = options.max_attempts is not None and tries >= options.max_attempts
                out_of_time = (
                    options.max_duration is not None
                    and loop.time() + delay - started > options.max_duration.total_seconds()
                )
                if out_of_tries or out_of_time:
                    return self._failed(500, f"step {self.name!r} failed after {tries} attempts: {exc!r}")
                await asyncio.sleep(delay)
                delay = min(delay * options.retry_interval_factor, options.max_retry_interval.total_seconds())
                continue
            try:
                raw = to_json(value)
            except (TypeError, msgspec.EncodeError) as exc:
                return self._failed(500, f"step {self.name!r} returned a value that is not JSON-serialisable: {exc}")
            return RunEntry(name=self.name, value=msgspec.Raw(raw), source=self.source)
