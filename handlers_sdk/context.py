"""The handler's view of its invocation: durable steps and deterministic helpers.

Typed end to end: ``ctx.run`` has the step function's return type and checks its arguments,
calls check their input against the callee's annotation and return its output type, and state
and promises take an optional ``type_hint`` (the one name of the type parameter everywhere).

State reads are ``async`` and writes are not, as in Restate's SDK: a write is journaled (and
applied by the proxy in the same transaction) without waiting for anything, while a read returns
a value the attempt may have to wait for.
"""

from __future__ import annotations

import inspect
import random
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import msgspec

from handlers_sdk.clock import Clock
from handlers_sdk.errors import JournalMismatchError
from handlers_sdk.futures import DurableFuture
from handlers_sdk.promise import DurablePromise
from handlers_sdk.protocol import (
    NULL,
    AwakeableEntry,
    CallEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    Entry,
    GetStateEntry,
    PatchEntry,
    RunEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    StateKeysEntry,
    awakeable_id,
    child_invocation_id,
)
from handlers_sdk.run import RunFuture, RunOptions, Step, return_type
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
    "RunFuture",
    "RunOptions",
    "SendHandle",
    "WorkflowContext",
    "WorkflowSharedContext",
    "context_for",
]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - a handler's input type, as in Restate's HandlerType[I, O]
O = TypeVar("O")  # noqa: E741 - a handler's output type
P = ParamSpec("P")
_MILLISECOND = timedelta(milliseconds=1)
#: "Not passed" for deprecated keyword arguments (None and Any are meaningful values).
_UNSET: Any = object()


def _hint(type_hint: Any, result_type: Any) -> Any:
    """The type parameter, from `type_hint` or its deprecated spelling `result_type`."""
    if result_type is _UNSET:
        return type_hint
    warnings.warn("result_type= is deprecated, use type_hint= instead", DeprecationWarning, stacklevel=3)
    return result_type


class CallFuture(DurableFuture[T]):
    """The result of a call to another handler; `invocation_id` is the child's id."""

    def __init__(self, attempt: Attempt, index: int, type_hint: Any, invocation_id: str) -> None:
        super().__init__(attempt, index, type_hint)
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
    return service, name, return_type(handler)


def _caller_source() -> str:
    """``file:line`` of the user code calling into the SDK (taken when `run` is called: inside a
    gather, the frame that later runs the step is the event loop's)."""
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("handlers_sdk"):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _takes_options(fn: Callable[..., Any]) -> bool:
    """True if `fn` names a parameter ``options`` (then ``options=`` is its own argument; a
    ``**kwargs`` function gets the retry policy, as before `run_with` existed)."""
    try:
        return "options" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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

    @overload
    def run(
        self, name: str, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> RunFuture[T]: ...

    @overload
    def run(self, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> RunFuture[T]: ...

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> RunFuture[Any]:
        """Run ``fn(*args, **kwargs)`` once, durably: ``await ctx.run("charge", charge, order_id)``.

        Returns a durable future of `fn`'s (JSON round-tripped) value, decoded into its annotated
        return type; awaiting it runs the step (or, on replay, returns the journaled value without
        calling `fn`), and it can go into `gather` and `select`. Sync functions run in a worker
        thread. Every keyword argument is `fn`'s: a retry policy goes through `run_with`
        (``options=RunOptions(...)`` here still works, deprecated, when `fn` has no such parameter).

        Raises:
            JournalMismatchError: the journal holds another operation at this position.
            TerminalError: (when awaited) `fn` raised one, or in-place retries were exhausted.
        """
        options = kwargs.get("options")
        if isinstance(options, RunOptions) and not _takes_options(fn):
            warnings.warn(
                "ctx.run(..., options=RunOptions(...)) is deprecated, use ctx.run_with(RunOptions(...), name, fn, ...)",
                DeprecationWarning,
                stacklevel=2,
            )
            del kwargs["options"]
        else:
            options = None
        return self._step(Step(name, fn, args, kwargs, options, _caller_source()))

    @overload
    def run_with(
        self,
        options: RunOptions,
        name: str,
        fn: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> RunFuture[T]: ...

    @overload
    def run_with(
        self, options: RunOptions, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> RunFuture[T]: ...

    def run_with(
        self, options: RunOptions, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> RunFuture[Any]:
        """`run` with a retry policy: ``await ctx.run_with(RunOptions(max_attempts=3), "charge", charge, id)``.

        The options come first and positionally, so that none of `fn`'s own keyword arguments can
        be taken for them.
        """
        return self._step(Step(name, fn, args, kwargs, options, _caller_source()))

    def _step(self, step: Step) -> RunFuture[Any]:
        attempt = self._attempt
        index = attempt.replay.allocate()
        recorded = self._match(index, RunEntry(name=step.name))
        if recorded is None:
            attempt.check_cancelled(index)
        assert recorded is None or isinstance(recorded, RunEntry)
        return RunFuture(attempt, index, step, recorded)

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

    def patched(self, name: str) -> bool:
        """True if this invocation reached this point with the code change `name` deployed.

        Ship a change to code that has invocations in flight as ``if ctx.patched("new-shipping"):
        <new code> else: <old code>``. An invocation that gets here after the deployment journals
        a marker and gets True (on every replay too); one whose journal already went past this
        point without the marker (it ran the old code here) gets False, writes nothing, and
        replays the old branch cleanly. Once no invocation can take the old branch, replace the
        call with `deprecate_patch`.
        """
        replay = self._attempt.replay
        index = replay.next_index
        recorded = replay.recorded(index)
        if isinstance(recorded, PatchEntry) and recorded.name == name:
            replay.allocate()
            return True
        if recorded is not None or replay.passed(index):
            return False  # the journal went on from here without the marker: the old code ran
        self._attempt.cancel_reached(replay.allocate())
        self._attempt.append(index, PatchEntry(name=name))
        return True

    def deprecate_patch(self, name: str) -> None:
        """The cleanup of ``ctx.patched(name)`` once every invocation of the old code is done:
        keep only the new code, and call this where the check was. Journals that have the marker
        replay past it; new invocations write none."""
        replay = self._attempt.replay
        recorded = replay.recorded(replay.next_index)
        if isinstance(recorded, PatchEntry) and recorded.name == name:
            replay.allocate()

    async def time(self) -> float:
        """The wall clock in seconds (millisecond resolution), journaled: the same value on every replay."""
        return await self.run("ctx.time", _seconds, self._attempt.clock)

    def sleep(self, duration: timedelta, name: str = "") -> DurableFuture[None]:
        """A durable timer: ``await ctx.sleep(timedelta(days=3))`` suspends the handler (it holds
        no request, task or memory) and the proxy re-invokes it when the time has come, also
        across restarts. Can be combined with `select` as a timeout."""
        wake_at = self._attempt.clock.now_ms() + max(0, _ms(duration))
        index = self._journal(SleepEntry(name=name, wake_at_ms=wake_at))
        return DurableFuture(self._attempt, index)

    @overload
    def generic_call(self, service: str, handler: str, arg: Any = None, *, key: str = "") -> CallFuture[Any]: ...

    @overload
    def generic_call(
        self, service: str, handler: str, arg: Any = None, *, key: str = "", type_hint: type[T]
    ) -> CallFuture[T]: ...

    @overload
    def generic_call(
        self, service: str, handler: str, arg: Any = None, *, key: str = "", result_type: Any
    ) -> CallFuture[Any]: ...

    def generic_call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str = "",
        type_hint: Any = Any,
        result_type: Any = _UNSET,
    ) -> CallFuture[Any]:
        """Call `service`/`handler` (of any deployment) and get a future of its result, decoded
        into `type_hint` (``result_type=`` is its deprecated spelling).

        The caller suspends while it waits. A terminal failure of the callee raises TerminalError
        in the caller. The child's id is derived from this invocation and the journal index, so
        a replay never starts it twice.
        """
        return self._call(service, handler, arg, key, _hint(type_hint, result_type))

    def _child_id(self, index: int) -> str:
        """The id of the child a call or send at `index` starts: the journaled one on a replay (an
        entry journaled before the id format changed keeps its id), else derived from this id."""
        recorded = self._attempt.replay.recorded(index)
        if isinstance(recorded, CallEntry | SendEntry):
            return recorded.invocation_id
        return child_invocation_id(self.invocation_id, index)

    def _call(self, service: str, handler: str, arg: Any, key: str, type_hint: Any) -> CallFuture[Any]:
        index = self._attempt.replay.next_index
        child = self._child_id(index)
        attempted = CallEntry(
            service=service, handler=handler, key=key, input=msgspec.Raw(to_json(arg)), invocation_id=child
        )
        self._journal(attempted)
        return CallFuture(self._attempt, index, type_hint, child)

    @overload
    def service_call(self, handler: Callable[[Any], Awaitable[O]]) -> CallFuture[O]: ...

    @overload
    def service_call(self, handler: Callable[[Any, I], Awaitable[O]], arg: I) -> CallFuture[O]: ...

    def service_call(self, handler: Callable[..., Awaitable[Any]], arg: Any = None) -> CallFuture[Any]:
        """Call a handler function of a Service: ``await ctx.service_call(greet, "Ada")``.

        `arg` is checked against the handler's input annotation and the future has its return type.
        """
        service, name, type_hint = _target_of(handler)
        return self._call(service, name, arg, "", type_hint)

    def generic_send(
        self, service: str, handler: str, arg: Any = None, *, key: str = "", send_delay: timedelta | None = None
    ) -> SendHandle:
        """Start `service`/`handler` without waiting for it, optionally after `send_delay` (durable
        like a timer)."""
        index = self._attempt.replay.next_index
        child = self._child_id(index)
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

    @overload
    def service_send(
        self, handler: Callable[[Any], Awaitable[Any]], *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    @overload
    def service_send(
        self, handler: Callable[[Any, I], Awaitable[Any]], arg: I, *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    def service_send(
        self, handler: Callable[..., Awaitable[Any]], arg: Any = None, *, send_delay: timedelta | None = None
    ) -> SendHandle:
        """One-way call of a handler function of a Service (`arg` checked as for `service_call`)."""
        service, name, _ = _target_of(handler)
        return self.generic_send(service, name, arg, send_delay=send_delay)

    @overload
    def awakeable(self) -> tuple[str, DurableFuture[Any]]: ...

    @overload
    def awakeable(self, type_hint: type[T]) -> tuple[str, DurableFuture[T]]: ...

    @overload
    def awakeable(self, *, result_type: Any) -> tuple[str, DurableFuture[Any]]: ...

    def awakeable(self, type_hint: Any = Any, *, result_type: Any = _UNSET) -> tuple[str, DurableFuture[Any]]:
        """A promise completed from outside: hand the id to the world (inside a ``ctx.run``), then
        await the future (its value decoded into `type_hint`). ``POST /restate/awakeables/{id}/resolve``
        (JSON body) or ``/reject`` (text body) completes it."""
        type_hint = _hint(type_hint, result_type)
        index = self._attempt.replay.next_index
        awk = awakeable_id(self.invocation_id, index)
        self._journal(AwakeableEntry(id=awk))
        return awk, DurableFuture(self._attempt, index, type_hint)

    @overload
    def object_call(self, handler: Callable[[Any], Awaitable[O]], key: str) -> CallFuture[O]: ...

    @overload
    def object_call(self, handler: Callable[[Any, I], Awaitable[O]], key: str, arg: I) -> CallFuture[O]: ...

    def object_call(self, handler: Callable[..., Awaitable[Any]], key: str, arg: Any = None) -> CallFuture[Any]:
        """Call a handler of a VirtualObject for `key` (`arg` checked as for `service_call`)."""
        service, name, type_hint = _target_of(handler)
        return self._call(service, name, arg, key, type_hint)

    @overload
    def object_send(
        self, handler: Callable[[Any], Awaitable[Any]], key: str, *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    @overload
    def object_send(
        self, handler: Callable[[Any, I], Awaitable[Any]], key: str, arg: I, *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    def object_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        send_delay: timedelta | None = None,
    ) -> SendHandle:
        """One-way call of a VirtualObject handler for `key`."""
        service, name, _ = _target_of(handler)
        return self.generic_send(service, name, arg, key=key, send_delay=send_delay)

    @overload
    def workflow_call(self, handler: Callable[[Any], Awaitable[O]], key: str) -> CallFuture[O]: ...

    @overload
    def workflow_call(self, handler: Callable[[Any, I], Awaitable[O]], key: str, arg: I) -> CallFuture[O]: ...

    def workflow_call(self, handler: Callable[..., Awaitable[Any]], key: str, arg: Any = None) -> CallFuture[Any]:
        """Call a handler of a Workflow for `key`.

        Its run handler runs once per key: calling the run of a key whose run already exists
        raises a `TerminalError` (409) when awaited.
        """
        service, name, type_hint = _target_of(handler)
        return self._call(service, name, arg, key, type_hint)

    @overload
    def workflow_send(
        self, handler: Callable[[Any], Awaitable[Any]], key: str, *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    @overload
    def workflow_send(
        self, handler: Callable[[Any, I], Awaitable[Any]], key: str, arg: I, *, send_delay: timedelta | None = None
    ) -> SendHandle: ...

    def workflow_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        send_delay: timedelta | None = None,
    ) -> SendHandle:
        """One-way call of a Workflow handler for `key` (a no-op for the run of a key whose run exists)."""
        service, name, _ = _target_of(handler)
        return self.generic_send(service, name, arg, key=key, send_delay=send_delay)


class ObjectSharedContext(Context):
    """Context of a shared object handler (and base of the others): the key and state reads."""

    def key(self) -> str:
        """The key of the virtual object (or workflow) this invocation runs for."""
        return self._attempt.request.key

    @overload
    async def get(self, name: str) -> Any: ...

    @overload
    async def get(self, name: str, type_hint: type[T]) -> T | None: ...

    async def get(self, name: str, type_hint: Any = Any) -> Any:
        """The value of state key `name` decoded into `type_hint` (None if unset), journaled so
        replays see the same: ``count = await ctx.get("count", int) or 0`` (an ``int | None``;
        without `type_hint`, plain JSON typed ``Any``)."""
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
    handlers from then on. Writes are plain calls (nothing to await), reads are awaited, as in
    Restate's SDK.
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


class WorkflowSharedContext(ObjectSharedContext):
    """Context of a workflow's shared handlers: state reads and durable promises."""

    @overload
    def promise(self, name: str) -> DurablePromise[Any]: ...

    @overload
    def promise(self, name: str, type_hint: type[T]) -> DurablePromise[T]: ...

    def promise(self, name: str, type_hint: Any = Any) -> DurablePromise[Any]:
        """The durable promise `name` of this workflow key, its value decoded into `type_hint`."""
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
