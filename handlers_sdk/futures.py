"""Durable futures (sleeps, calls, awakeables, promise values) and their combinators: gather, select.

A durable future is completed by the proxy, never inside the attempt that created it: awaiting
one that is not completed in the journal ends the attempt (the handler *suspends*) and the proxy
re-invokes the handler once it is completed. Replaying the journal then finds it completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from handlers_sdk.errors import TerminalError
from handlers_sdk.protocol import COMPLETABLE, CompletableEntry, PromisePeekEntry, SleepEntry
from handlers_sdk.serde import from_json

if TYPE_CHECKING:
    from handlers_sdk.attempt import Attempt

__all__ = ["DurableFuture", "gather", "select"]

T = TypeVar("T")


class DurableFuture(Generic[T]):
    """An operation journaled at `index` whose result the proxy delivers (possibly much later)."""

    def __init__(self, attempt: Attempt, index: int, result_type: Any = Any) -> None:
        self._attempt = attempt
        self.index = index
        self._result_type = result_type

    async def _completion(self) -> CompletableEntry | None:
        """The completed entry, after making sure the entry itself is durable."""
        attempt = self._attempt
        committed = await attempt.durable(self.index)
        if isinstance(committed, COMPLETABLE) and committed.completed:
            attempt.saw(committed)
            return committed  # completed by the proxy when it journaled the entry
        entry = attempt.replay.completion(self.index)
        if entry is not None and attempt.hidden(entry):
            return None  # completed after the cancellation the replay has yet to reach
        return entry

    def _value(self, entry: CompletableEntry) -> T:
        if isinstance(entry, SleepEntry):
            return None  # type: ignore[return-value]
        if isinstance(entry, PromisePeekEntry) and not entry.found:
            return None  # type: ignore[return-value]
        if entry.failure is not None:
            raise TerminalError(entry.failure.message, entry.failure.code)
        try:
            value: T = from_json(entry.value, self._result_type)
        except msgspec.ValidationError as exc:
            raise TerminalError(f"result does not fit {self._result_type}: {exc}") from None
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
        return self._wait().__await__()


async def gather(*futures: DurableFuture[Any] | Awaitable[Any]) -> list[Any]:
    """Wait for all futures; results in argument order. The first failure (by position) raises.

    Durable futures that are not completed yet are waited on together: the handler suspends once
    for all of them instead of once per future. Other awaitables (``ctx.run`` calls) are awaited
    first, concurrently.
    """
    plain = [f for f in futures if not isinstance(f, DurableFuture)]
    plain_results = iter(await asyncio.gather(*plain)) if plain else iter(())
    durable = [f for f in futures if isinstance(f, DurableFuture)]
    completions = [await f._completion() for f in durable]
    missing = [f.index for f, c in zip(durable, completions, strict=True) if c is None]
    if missing:
        attempt = durable[0]._attempt
        attempt.check_cancelled()
        attempt.request_suspend(missing)
        await attempt.park()
    by_index = {f.index: (f, c) for f, c in zip(durable, completions, strict=True)}
    results: list[Any] = []
    for f in futures:
        if isinstance(f, DurableFuture):
            future, entry = by_index[f.index]
            assert entry is not None
            results.append(future._value(entry))
        else:
            results.append(next(plain_results))
    return results


async def select(**futures: DurableFuture[Any]) -> tuple[str, Any]:
    """Wait for the first of several durable futures: returns ``(name, result)`` of the winner.

    Deterministic on replay: the winner is the future the proxy completed first (lowest
    completion sequence number), whatever else has completed since. A failed winner raises its
    TerminalError. Example::

        name, value = await select(approval=approval_future, timeout=ctx.sleep(timedelta(days=3)))
    """
    if not futures:
        raise ValueError("select needs at least one future")
    completed: list[tuple[int, str, DurableFuture[Any], CompletableEntry]] = []
    for name, future in futures.items():
        entry = await future._completion()
        if entry is not None:
            completed.append((entry.seq, name, future, entry))
    if not completed:
        attempt = next(iter(futures.values()))._attempt
        attempt.check_cancelled()
        attempt.request_suspend([f.index for f in futures.values()])
        await attempt.park()
    _, name, future, entry = min(completed, key=lambda c: c[0])
    return name, future._value(entry)
