"""A handler module as a user writes it: it must pass ``mypy --strict`` against the installed SDK.

`assert_type` pins what the SDK's annotations give (a type erased to Any fails it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict, assert_type

import msgspec

from handlers_sdk import (
    CallFuture,
    Context,
    DurableFuture,
    ObjectContext,
    RunFuture,
    RunOptions,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    gather,
    select,
)

greeter = Service("TypedGreeter")
counter = VirtualObject("TypedCounter")
signup = Workflow("TypedSignup")


class Order(msgspec.Struct, frozen=True):
    order_id: str
    amount: float


@dataclass(frozen=True)
class Receipt:
    order_id: str
    charge: str


class Totals(TypedDict):
    count: int


def charge(order_id: str, amount: float, *, currency: str = "EUR") -> str:
    return f"ch_{order_id}_{amount}{currency}"


async def fetch_total(order_id: str) -> float:
    return 1.0


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"Hello {name}"


@greeter.handler()
async def pay(ctx: Context, order: Order) -> Receipt:
    step = ctx.run("charge", charge, order.order_id, order.amount, currency="USD")
    assert_type(step, RunFuture[str])
    charge_id = await step
    assert_type(charge_id, str)
    total = await ctx.run("total", fetch_total, order.order_id)
    assert_type(total, float)
    retried = await ctx.run_with(RunOptions(max_attempts=3), "charge-again", charge, order.order_id, total)
    assert_type(retried, str)
    call = ctx.service_call(greet, "Ada")
    assert_type(call, CallFuture[str])
    assert_type(await call, str)
    assert_type(await ctx.service_call(ping), bool)
    ctx.service_send(greet, "Grace", send_delay=timedelta(seconds=1))
    both = await gather(ctx.run("a", fetch_total, "a"), ctx.sleep(timedelta(seconds=1)))
    assert_type(both, list[Any])
    winner, _ = await select(done=ctx.run("b", fetch_total, "b"), timeout=ctx.sleep(timedelta(seconds=5)))
    assert_type(winner, str)
    if ctx.patched("insured-shipping"):
        charge_id += "-insured"
    return Receipt(order.order_id, charge_id)


@greeter.handler()
async def ping(ctx: Context) -> bool:
    return True


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> Totals:
    count = await ctx.get("count", int) or 0
    assert_type(await ctx.get("count", int), int | None)
    assert_type(await ctx.get("anything"), Any)
    ctx.set("count", count + delta)
    receipt = await ctx.object_call(add, "other-key", 1)
    assert_type(receipt, Totals)
    return {"count": count + delta}


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    link = ctx.promise("link", str)
    assert_type(await link.value(), str)
    await link.resolve("secret")
    awakeable_id, future = ctx.awakeable(int)
    assert_type(future, DurableFuture[int])
    return email + awakeable_id


# The decorators hand the function back as it was: its signature is intact.
keeps_signature: Callable[[Context, str], Coroutine[Any, Any, str]] = greet
