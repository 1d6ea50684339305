"""Handlers for the toolkit tests: well-behaved ones, and ones that are not replay-safe."""

from __future__ import annotations

import random
import sys
import time
from datetime import timedelta
from pathlib import Path

from handlers_sdk import Context, RetryableError, Service, gather

__all__ = [
    "LEDGER",
    "bad",
    "flaky",
    "good",
    "line_of",
    "record",
]

#: Side effects of the step bodies below, in order: (step, argument).
LEDGER: list[tuple[str, object]] = []


def line_of(module: str, needle: str) -> str:
    """``dir/file.py:N`` of the first line of `module`'s source containing `needle`.

    Tests compare source lines this way, so that editing the example does not break them.
    """
    path = Path(sys.modules[module].__file__ or "")
    number = next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
    return f"{path.parent.name}/{path.name}:{number}"


def record(step: str, value: object) -> object:
    """A step body with a visible side effect."""
    LEDGER.append((step, value))
    return value


async def add_one(x: int) -> int:
    """An async step body."""
    LEDGER.append(("add_one", x))
    return x + 1


good = Service("Good")


@good.handler()
async def chain(ctx: Context, n: int) -> int:
    """Three sequential steps."""
    a = await ctx.run("first", add_one, n)
    b = await ctx.run("second", add_one, a)
    return int(await ctx.run("third", add_one, b))


@good.handler()
async def fan_out(ctx: Context, n: int) -> list[int]:
    """Steps in parallel, then one more."""
    values = await gather(ctx.run("a", add_one, n), ctx.run("b", add_one, n + 10), ctx.run("c", record, "c", n))
    total = await ctx.run("sum", record, "sum", sum(values))
    return [*values, total]


@good.handler()
async def seeded(ctx: Context) -> str:
    """Randomness from ctx.random() is replay-safe."""
    token = ctx.random().randint(0, 10**9)
    await ctx.run(f"step-{token}", record, "seeded", token)
    return f"{token}-{ctx.uuid()}"


@good.handler()
async def nap(ctx: Context, hours: int) -> str:
    """Two durable timers."""
    await ctx.run("before", record, "before", hours)
    await ctx.sleep(timedelta(hours=hours))
    await ctx.sleep(timedelta(hours=hours))
    return str(await ctx.run("after", record, "after", hours))


@good.handler()
async def approval(ctx: Context, order: str) -> str:
    """Waits for an awakeable resolved from outside."""
    awakeable_id, decision = ctx.awakeable(str)
    await ctx.run("notify", record, "notify", awakeable_id)
    return f"{order}: {await decision}"


@good.handler()
async def parent(ctx: Context, n: int) -> int:
    """Calls another handler."""
    doubled = await ctx.service_call(double, n)
    return int(await ctx.run("after-call", add_one, doubled))


@good.handler()
async def double(ctx: Context, n: int) -> int:
    """The callee."""
    doubled = await ctx.run("double", record, "double", n * 2)
    assert isinstance(doubled, int)  # `record` returns what it was given, typed as object
    return doubled


flaky = Service("Flaky")
_FAILURES: dict[str, int] = {}


def fail_once(key: str) -> str:
    """Raises RetryableError the first time it is called with `key`."""
    if _FAILURES.get(key, 0) == 0:
        _FAILURES[key] = 1
        raise RetryableError("not yet", retry_after=timedelta(minutes=5))
    return key


@flaky.handler()
async def once(ctx: Context, key: str) -> str:
    """Fails the first attempt (outside any step), then succeeds."""
    await ctx.run("start", record, "start", key)
    fail_once(key)
    return key


bad = Service("Bad")


@bad.handler()
async def random_name(ctx: Context, n: int) -> int:
    """Not replay-safe: a step name drawn from the process's random generator."""
    a = await ctx.run("first", add_one, n)
    b = await ctx.run(f"second-{random.random():.6f}", add_one, a)
    return int(await ctx.run("third", add_one, b))


@bad.handler()
async def wall_clock_output(ctx: Context, n: int) -> str:
    """Not replay-safe: the output reads the wall clock outside ctx.run."""
    a = await ctx.run("first", add_one, n)
    return f"{a} at {time.time_ns()}"


@bad.handler()
async def wall_clock_args(ctx: Context, n: int) -> int:
    """Not replay-safe: a step argument reads the wall clock outside ctx.run."""
    a = await ctx.run("first", add_one, n)
    await ctx.run("stamp", record, "stamp", time.time_ns())
    return int(a)
