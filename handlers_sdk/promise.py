"""Durable promises of a workflow key: awaited by one handler, resolved or rejected by another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from handlers_sdk.futures import DurableFuture
from handlers_sdk.protocol import Failure, PromiseCompleteEntry, PromiseGetEntry, PromisePeekEntry
from handlers_sdk.serde import to_json

if TYPE_CHECKING:
    from handlers_sdk.context import Context

__all__ = ["DurablePromise"]

T = TypeVar("T")


class _CompletionFuture(DurableFuture[None]):
    """The future of a promise resolution or rejection: its 409 (already completed) is only seen
    by awaiting it, so collecting one that was never awaited warns."""

    _must_await: ClassVar[bool] = True


class DurablePromise(Generic[T]):
    """A named promise of a workflow key: awaited by one handler, resolved by another."""

    def __init__(self, ctx: Context, name: str, type_hint: Any = Any) -> None:
        self._ctx = ctx
        self.name = name
        self._type = type_hint

    def value(self) -> DurableFuture[T]:
        """A future of the promise's value: ``await ctx.promise("email-link").value()``."""
        index = self._ctx._journal(PromiseGetEntry(name=self.name))
        return DurableFuture(self._ctx._attempt, index, self._type)

    async def peek(self) -> T | None:
        """The value if the promise is resolved, else None (a rejected one raises TerminalError)."""
        index = self._ctx._journal(PromisePeekEntry(name=self.name))
        future: DurableFuture[T | None] = DurableFuture(self._ctx._attempt, index, self._type)
        return await future

    def resolve(self, value: T) -> DurableFuture[None]:
        """Resolve the promise: ``await promise.resolve(value)``; the await raises TerminalError
        (409) if it was already completed. A future that is never awaited warns when collected."""
        entry = PromiseCompleteEntry(name=self.name, resolution=msgspec.Raw(to_json(value)))
        index = self._ctx._journal(entry)
        return _CompletionFuture(self._ctx._attempt, index)

    def reject(self, message: str, status_code: int = 500) -> DurableFuture[None]:
        """Reject the promise (``await`` it, as `resolve`): its waiters get a TerminalError."""
        entry = PromiseCompleteEntry(name=self.name, rejection=Failure(code=status_code, message=message))
        index = self._ctx._journal(entry)
        return _CompletionFuture(self._ctx._attempt, index)
