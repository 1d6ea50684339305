"""Instrumentation of a handler's ``ctx.run`` calls: which steps it asked for, which bodies ran.

The in-process runtime wraps each handler so that, per attempt, every ``ctx.run`` call is logged
(name, call site, a JSON digest of its arguments) and every execution of a step *body* is logged
with the journal index it belongs to. That is what lets the crash tests assert "no journaled
step ran again": the context's ``run`` is wrapped on the instance of one attempt, and the
journal index of each body comes from the attempt's allocation observer (`StepRecorder.on_allocate`,
passed to `handlers_sdk.attempt.run_attempt`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from handlers_sdk.serde import to_json
from handlers_sdk.service import HandlerDef

__all__ = ["StepCall", "StepExecution", "StepRecorder"]

#: The journal index most recently allocated in the current task (set by
#: `StepRecorder.on_allocate`). `Context.run` allocates its index and then calls the body in the
#: same task (or a thread that copies the task's context), so a body sees the index of its step.
_op_index: ContextVar[int] = ContextVar("durable_testing_op_index", default=-1)


@dataclass(frozen=True)
class StepCall:
    """One ``ctx.run(name, fn, *args)`` call made by the handler in one attempt (replayed or new)."""

    attempt: int
    name: str
    #: ``file:line`` of the call.
    source: str
    #: JSON of ``[args, kwargs]``, or None when they are not JSON-serialisable.
    args: bytes | None


@dataclass(frozen=True)
class StepExecution:
    """One run of a step body (a side effect), at journal `index`, in attempt `attempt`."""

    attempt: int
    index: int
    name: str
    #: True when the index was already committed as the body started: a step ran twice.
    journaled: bool


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
    try:
        return to_json([list(args), kwargs])
    except (TypeError, msgspec.EncodeError):
        return None


class StepRecorder:
    """Collects `StepCall`s and `StepExecution`s of one invocation across its attempts.

    Use both halves for an attempt: run `instrument(handler, attempt)` with
    ``on_allocate=recorder.on_allocate``.

    Args:
        is_journaled: tells whether a journal index is committed (read when a body starts).
        run_bodies: when False, step bodies are replaced by a no-op returning None (the local
            replayer uses this so that no side effect of a production journal is ever repeated).
    """

    def __init__(self, is_journaled: Callable[[int], bool], run_bodies: bool = True) -> None:
        self.calls: list[StepCall] = []
        self.executions: list[StepExecution] = []
        self.skipped: list[StepExecution] = []
        #: Every journal index the handler allocated (replayed or new), in allocation order.
        self.allocated: list[int] = []
        self._is_journaled = is_journaled
        self._run_bodies = run_bodies
        self._lock = threading.Lock()

    def on_allocate(self, index: int) -> None:
        """The attempt's allocation observer: remembers `index` for the step body that follows."""
        _op_index.set(index)
        self.allocated.append(index)

    def instrument(self, handler: HandlerDef, attempt: int) -> HandlerDef:
        """A copy of `handler` whose context records the ``ctx.run`` calls of `attempt`."""
        original = handler.fn

        async def observed(ctx: Any, *rest: Any) -> Any:
            task = asyncio.current_task()
            if task is not None:
                # run_attempt does not read the exception of a handler task that ended in a journal
                # mismatch; reading it here keeps asyncio from logging "never retrieved".
                task.add_done_callback(_retrieve)
            self._wrap_run(ctx, attempt)
            return await original(ctx, *rest)

        clone = copy.copy(handler)
        clone.fn = observed
        return clone

    def _wrap_run(self, ctx: Any, attempt: int) -> None:
        run, run_with = ctx.run, ctx.run_with

        # Plain functions returning the SDK's step future, not coroutines of their own. The SDK takes
        # the step's source line when `run` is called, from the first caller frame outside
        # `handlers_sdk` (this wrapper's module included), so it stays the user's call site.
        def run_observed(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            plain = {k: v for k, v in kwargs.items() if k != "options"}
            index: list[int] = []
            self._called(attempt, name, sys._getframe(1), args, plain)
            future = run(name, self._wrap(fn, attempt, name, index), *args, **kwargs)
            index.append(future.index)
            return future

        def run_with_observed(options: Any, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            index: list[int] = []
            self._called(attempt, name, sys._getframe(1), args, kwargs)
            future = run_with(options, name, self._wrap(fn, attempt, name, index), *args, **kwargs)
            index.append(future.index)
            return future

        ctx.run = run_observed
        ctx.run_with = run_with_observed

    def _called(self, attempt: int, name: str, caller: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = StepCall(attempt, name, f"{caller.f_code.co_filename}:{caller.f_lineno}", _digest(args, kwargs))
        with self._lock:
            self.calls.append(call)

    def _record(self, attempt: int, name: str, step_index: list[int]) -> bool:
        # The step's own index once `run` has returned its future (a body runs when the future is
        # awaited, maybe in another task); the allocation seen last in this task before that.
        index = step_index[0] if step_index else _op_index.get()
        execution = StepExecution(attempt, index, name, self._is_journaled(index))
        with self._lock:
            (self.executions if self._run_bodies else self.skipped).append(execution)
        return self._run_bodies

    def _wrap(self, fn: Callable[..., Any], attempt: int, name: str, index: list[int]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_body(*args: Any, **kwargs: Any) -> Any:
                if self._record(attempt, name, index):
                    return await fn(*args, **kwargs)
                return None

            return async_body

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            if self._record(attempt, name, index):
                return fn(*args, **kwargs)
            return None

        return body
