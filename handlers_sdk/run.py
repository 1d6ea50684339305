"""Durable steps: ``ctx.run``'s retry policy (`RunOptions`), the step body, and its future."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, get_type_hints

import msgspec

from handlers_sdk import tracing
from handlers_sdk.clock import Clock
from handlers_sdk.errors import TerminalError
from handlers_sdk.futures import DurableFuture, Resolved
from handlers_sdk.protocol import Failure, RunEntry
from handlers_sdk.serde import from_json, to_json

if TYPE_CHECKING:
    from handlers_sdk.attempt import Attempt

__all__ = ["RunFuture", "RunOptions", "Step", "return_type"]

T = TypeVar("T")


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


def return_type(fn: Callable[..., Any]) -> Any:
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


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call `fn`; sync functions go to a worker thread so they never block the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


@dataclass(frozen=True, slots=True)
class Step:
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
        body = self._execute_untimed()
        entry = await (tracing.traced_step(self.name, body) if tracing.enabled else body)
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


class RunFuture(DurableFuture[T]):
    """The future of a ``ctx.run`` step: its journaled value, decoded into the step function's
    return type.

    The index is taken when the step is created (so indexes follow creation order); the body runs
    when the future is first awaited, alone or in `gather` or `select`, and never again once its
    entry is journaled. A step that is never awaited never runs (and warns when collected).
    """

    _executes: ClassVar[bool] = True
    _must_await: ClassVar[bool] = True

    def __init__(self, attempt: Attempt, index: int, step: Step, recorded: RunEntry | None) -> None:
        super().__init__(attempt, index, return_type(step.fn))
        self._step = step
        self._recorded = recorded
        self._running: asyncio.Future[RunEntry] | None = None
        #: Set once the body has returned (its entry may still be on its way to the proxy).
        self._body_done = asyncio.Event()

    @property
    def name(self) -> str:
        """The step's name."""
        return self._step.name

    async def _completion(self) -> RunEntry:
        """The journaled entry: the recorded one, or the one the body produces now."""
        if self._recorded is not None:
            return self._recorded
        if self._running is not None:  # another task runs the body: wait for the same entry
            return await asyncio.shield(self._running)
        running = self._running = asyncio.get_running_loop().create_future()
        try:
            entry = await self._execute()
        except BaseException as exc:
            self._running = None  # interrupted (cancelled, or the attempt fails): may run again
            if isinstance(exc, Exception):
                running.set_exception(exc)
                running.exception()  # retrieved: whoever waits gets it; nobody else must log it
            else:
                running.cancel()
            raise
        self._recorded = entry
        running.set_result(entry)
        return entry

    async def _execute(self) -> RunEntry:
        attempt = self._attempt
        await attempt.barrier()
        attempt.step_started()
        try:
            entry = await self._step.execute(attempt.clock)  # in a span when traced (`Step.execute`)
        finally:
            attempt.step_finished()
        self._body_done.set()
        if self._selected:
            entry = msgspec.structs.replace(entry, seen_seq=attempt.known_seq())
        committed = await attempt.commit(self.index, entry)
        assert isinstance(committed, RunEntry)
        return committed

    async def _ready(self) -> RunEntry | None:
        return self._recorded

    def _order(self, entry: Resolved) -> tuple[int, int, int]:
        # After the completions the attempt knew of when it journaled the step, before any later one.
        assert isinstance(entry, RunEntry)
        return (entry.seen_seq, 1, self.index)

    def _value(self, entry: Resolved) -> T:
        assert isinstance(entry, RunEntry)
        if entry.failure is not None:
            raise TerminalError(entry.failure.message, entry.failure.code)
        try:
            value: T = from_json(entry.value, self._type_hint)
        except msgspec.ValidationError as exc:
            message = f"step {self._step.name!r}: journaled value does not fit {self._type_hint}: {exc}"
            raise TerminalError(message) from None
        return value

    async def _wait(self) -> T:
        return self._value(await self._completion())
