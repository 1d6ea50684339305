"""Durable futures (steps, sleeps, calls, awakeables, promise values) and their combinators:
gather, select.

Most durable futures are completed by the proxy, never inside the attempt that created them:
awaiting one that is not completed in the journal ends the attempt (the handler *suspends*) and
the proxy re-invokes the handler once it is completed. Replaying the journal then finds it
completed. A step (``ctx.run``) is the exception: its body runs in the attempt, when the future
is first awaited (alone, in `gather` or in `select`).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from handlers_sdk.errors import TerminalError
from handlers_sdk.protocol import COMPLETABLE, CompletableEntry, PromisePeekEntry, RunEntry, SleepEntry
from handlers_sdk.serde import from_json

if TYPE_CHECKING:
    from handlers_sdk.attempt import Attempt
    from handlers_sdk.run import RunFuture

__all__ = ["DurableFuture", "Resolved", "gather", "select"]

T = TypeVar("T")
#: The journal entry that holds a future's result.
Resolved = CompletableEntry | RunEntry


class DurableFuture(Generic[T]):
    """An operation journaled at `index` whose result is durable (possibly much later).

    Args:
        attempt: the attempt that created it.
        index: its journal index.
        type_hint: the type its JSON result is decoded into (``Any``: plain JSON).
    """

    #: True for futures whose work runs in the attempt (steps) rather than in the proxy.
    _executes: ClassVar[bool] = False
    #: True for futures that do nothing unless awaited, or whose failure nobody would see
    #: otherwise: collecting one that was never awaited warns, as a never-awaited coroutine does.
    _must_await: ClassVar[bool] = False

    def __init__(self, attempt: Attempt, index: int, type_hint: Any = Any) -> None:
        self._attempt = attempt
        self.index = index
        self._type_hint = type_hint
        self._consumed = False
        #: Set by `select`: the step records where it stands among the proxy's completions.
        self._selected = False

    def __del__(self) -> None:
        # An attempt that ended early (suspended, fenced) never got to the await: nothing is lost.
        if self._must_await and not self._consumed and not self._attempt.stopped.done():
            warnings.warn(f"{self!r} was never awaited", RuntimeWarning, stacklevel=2)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at journal index {self.index}>"

    async def _completion(self) -> Resolved | None:
        """The completed entry (for a step: after running it), or None if it is not completed."""
        attempt = self._attempt
        committed = await attempt.durable(self.index)
        if isinstance(committed, COMPLETABLE) and committed.completed:
            attempt.saw(committed)
            return committed  # completed by the proxy when it journaled the entry
        entry = attempt.replay.completion(self.index)
        if entry is not None and attempt.hidden(entry):
            return None  # completed after the cancellation the replay has yet to reach
        return entry

    async def _ready(self) -> Resolved | None:
        """The completed entry if it is completed already, without starting any work."""
        return await self._completion()

    def _order(self, entry: Resolved) -> tuple[int, int, int]:
        """Where the completion stands in the invocation's completion order (`select`'s winner is
        the lowest): the proxy's completion sequence number."""
        assert isinstance(entry, COMPLETABLE)
        return (entry.seq, 0, self.index)

    def _value(self, entry: Resolved) -> T:
        if isinstance(entry, SleepEntry):
            return None  # type: ignore[return-value]
        if isinstance(entry, PromisePeekEntry) and not entry.found:
            return None  # type: ignore[return-value]
        if entry.failure is not None:
            raise TerminalError(entry.failure.message, entry.failure.code)
        try:
            value: T = from_json(entry.value, self._type_hint)
        except msgspec.ValidationError as exc:
            raise TerminalError(f"result does not fit {self._type_hint}: {exc}") from None
        return value

    async def _wait(self) -> T:
        entry = await self._completion()
        if entry is None:
            self._attempt.check_cancelled()
            self._attempt.request_suspend([self.index])
            await self._attempt.park()
            raise AssertionError("unreachable: park never returns")
        return self._value(entry)

    def __await__(self) -> Generator[Any, None, T]:
        self._consumed = True
        return self._wait().__await__()


async def gather(*futures: DurableFuture[Any] | Awaitable[Any]) -> list[Any]:
    """Wait for all futures; results in argument order. The first failure (by position) raises.

    Steps run concurrently. Durable futures that are not completed yet are waited on together:
    the handler suspends once for all of them instead of once per future. Other awaitables are
    awaited concurrently with the steps.
    """
    for f in futures:
        if isinstance(f, DurableFuture):
            f._consumed = True
    # Steps and plain awaitables first, concurrently: their results are needed before suspending.
    eager = [i for i, f in enumerate(futures) if not isinstance(f, DurableFuture) or f._executes]
    awaitables = [f._completion() if isinstance(f, DurableFuture) else f for f in (futures[i] for i in eager)]
    early = dict(zip(eager, await asyncio.gather(*awaitables), strict=True)) if eager else {}
    waiting = [(i, f) for i, f in enumerate(futures) if isinstance(f, DurableFuture) and not f._executes]
    completions = {i: await f._completion() for i, f in waiting}
    missing = [f.index for i, f in waiting if completions[i] is None]
    if missing:
        attempt = waiting[0][1]._attempt
        attempt.check_cancelled()
        attempt.request_suspend(missing)
        await attempt.park()
    results: list[Any] = []
    for i, f in enumerate(futures):
        if isinstance(f, DurableFuture):
            entry = early[i] if f._executes else completions[i]
            assert entry is not None
            results.append(f._value(entry))
        else:
            results.append(early[i])
    return results


async def select(**futures: DurableFuture[Any]) -> tuple[str, Any]:
    """Wait for the first of several durable futures: returns ``(name, result)`` of the winner.

    Deterministic on replay: the winner is the future completed first in the invocation's
    completion order (the proxy's completion sequence numbers; a step stands after the
    completions its attempt knew of when it journaled it), whatever else has completed since.
    When nothing has completed yet, the steps among the futures run, and the first to finish
    wins (the others are cancelled); without steps, the handler suspends. A failed winner raises
    its TerminalError. Example::

        name, value = await select(approval=approval_future, timeout=ctx.sleep(timedelta(days=3)))
    """
    if not futures:
        raise ValueError("select needs at least one future")
    for future in futures.values():
        future._consumed = future._selected = True
    while True:
        completed: list[tuple[tuple[int, int, int], str, DurableFuture[Any], Resolved]] = []
        for name, future in futures.items():
            entry = await future._ready()
            if entry is not None:
                completed.append((future._order(entry), name, future, entry))
        if completed:
            _, name, future, entry = min(completed, key=lambda c: c[0])
            return name, future._value(entry)
        steps: list[RunFuture[Any]] = [f for f in futures.values() if f._executes]  # type: ignore[misc]
        if not steps:
            attempt = next(iter(futures.values()))._attempt
            attempt.check_cancelled()
            attempt.request_suspend([f.index for f in futures.values()])
            await attempt.park()
        await _first_step(steps)


async def _first_step(steps: list[RunFuture[Any]]) -> None:
    """Run `steps` until the first body returns; cancel the bodies still running (a later await
    runs them again) and wait until the finished ones are journaled (in suspend mode, that ends
    the attempt: the replay then finds them in the journal)."""
    tasks = [asyncio.ensure_future(f._completion()) for f in steps]
    bodies = [asyncio.ensure_future(f._body_done.wait()) for f in steps]
    try:
        await asyncio.wait([*tasks, *bodies], return_when=asyncio.FIRST_COMPLETED)
        for future, task in zip(steps, tasks, strict=True):
            if not future._body_done.is_set():
                task.cancel()
        await asyncio.wait(tasks)
    finally:
        for waiter in [*tasks, *bodies]:
            waiter.cancel()
        await asyncio.wait([*tasks, *bodies])
    for task in tasks:
        if not task.cancelled():
            task.result()  # a step body's exception fails the attempt, as it would awaited alone
