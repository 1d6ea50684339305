"""The typed handler API at run time: step futures in gather and select, typed state, calls and
inputs (msgspec Structs, dataclasses, TypedDicts, pydantic models), the deprecated spellings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from handlers_sdk import (
    Context,
    ObjectContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    gather,
    select,
)
from handlers_sdk.protocol import RunEntry
from handlers_sdk.service import json_schema
from handlers_sdk.testing import LocalRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


@dataclass(frozen=True)
class Size:
    width: int
    height: int


class Label(TypedDict):
    text: str


class Customer(pydantic.BaseModel):
    name: str
    age: pydantic.PositiveInt


steps = Service("Steps")
shapes = Service("Shapes")
carts = VirtualObject("Carts")
approvals = Workflow("Approvals")
RAN: list[str] = []


async def slow(name: str) -> str:
    RAN.append(name)
    await asyncio.sleep(0.05)
    return name


async def fast(name: str) -> str:
    RAN.append(name)
    return name


@steps.handler()
async def both(ctx: Context) -> list[str]:
    return await gather(ctx.run("a", slow, "a"), ctx.run("b", fast, "b"))


@steps.handler()
async def race(ctx: Context) -> str:
    name, value = await select(slow=ctx.run("slow", slow, "slow"), fast=ctx.run("fast", fast, "fast"))
    return f"{name}={value}"


@steps.handler()
async def forgets(ctx: Context) -> str:
    ctx.run("never", fast, "never")  # never awaited: the step does not run
    return "done"


@shapes.handler()
async def area(ctx: Context, size: Size) -> Point:
    return Point(size.width * size.height, 0)


@shapes.handler()
async def greet(ctx: Context, customer: Customer) -> Customer:
    older = await ctx.run("older", _older, customer)
    return older


@shapes.handler()
async def tag(ctx: Context, label: Label) -> Label:
    return {"text": label["text"].upper()}


@shapes.handler()
async def calls(ctx: Context) -> list[object]:
    point = await ctx.service_call(area, Size(2, 3))
    customer = await ctx.service_call(greet, Customer(name="Ada", age=36))
    return [point.x, customer.age]


@shapes.handler()
async def old_spellings(ctx: Context) -> int:
    with pytest.warns(DeprecationWarning, match="type_hint"):
        future = ctx.generic_call("Shapes", "area", Size(1, 1), result_type=Point)
    point = await future
    assert isinstance(point, Point)  # decoded into the (deprecated) result_type
    with pytest.warns(DeprecationWarning, match="type_hint"):
        ctx.awakeable(result_type=int)
    return point.x


def _older(customer: Customer) -> Customer:
    RAN.append("older")
    return Customer(name=customer.name, age=customer.age + 1)


@carts.handler()
async def add(ctx: ObjectContext, item: Point) -> list[Point]:
    items = await ctx.get("items", list[Point]) or []
    untyped = await ctx.get("items")
    assert untyped is None or isinstance(untyped[0], dict)
    items.append(item)
    ctx.set("items", items)
    return items


@approvals.main()
async def run(ctx: WorkflowContext) -> str:
    promise = ctx.promise("decision", str)
    await promise.resolve("yes")
    forgotten = promise.resolve("again")  # the 409 would be lost: collecting it warns
    with pytest.warns(RuntimeWarning, match="never awaited"):
        del forgotten
    try:
        await promise.resolve("twice")
    except TerminalError as exc:
        return f"{await promise.value()} ({exc.status_code})"
    return "unreachable"


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@pytest.mark.parametrize("mode", MODES)
async def test_step_futures_go_into_gather_and_run_concurrently(mode: Any) -> None:
    inv = await LocalRuntime([steps], mode=mode).start("Steps", "both")
    assert inv.result(list[str]) == ["a", "b"]
    assert inv.body_counts() == {0: 1, 1: 1}


@pytest.mark.parametrize("mode", MODES)
async def test_select_of_steps_picks_the_first_to_finish_the_same_way_on_every_replay(mode: Any) -> None:
    inv = await LocalRuntime([steps], mode=mode).start("Steps", "race")
    assert inv.result(str) == "fast=fast"
    (journaled,) = inv.journal.values()  # the losing step was cancelled before it was journaled
    assert isinstance(journaled, RunEntry) and journaled.name == "fast"


async def test_a_step_never_awaited_never_runs_and_warns() -> None:
    with pytest.warns(RuntimeWarning, match="never awaited"):
        inv = await LocalRuntime([steps]).start("Steps", "forgets")
    assert inv.result(str) == "done" and RAN == [] and inv.journal == {}


@pytest.mark.parametrize("mode", MODES)
async def test_dataclass_typeddict_and_pydantic_inputs_and_outputs(mode: Any) -> None:
    rt = LocalRuntime([shapes], mode=mode)
    assert await rt.call("Shapes", "area", {"width": 2, "height": 3}, type_hint=Point) == Point(6, 0)
    assert await rt.call("Shapes", "tag", {"text": "hi"}) == {"text": "HI"}
    customer = await rt.call("Shapes", "greet", {"name": "Ada", "age": 36}, type_hint=Customer)
    assert customer == Customer(name="Ada", age=37)
    assert await rt.call("Shapes", "calls") == [6, 37]


@pytest.mark.parametrize(
    ("handler", "body", "message"),
    [
        ("area", {"width": "wide", "height": 3}, "Expected `int`, got `str` - at `$.width`"),
        ("tag", {"label": "x"}, "missing required field `text`"),
        ("greet", {"name": "Ada", "age": -1}, "Input should be greater than 0"),
    ],
)
async def test_an_input_that_does_not_validate_is_a_400_before_any_step_and_never_retried(
    handler: str, body: object, message: str
) -> None:
    rt = LocalRuntime([shapes])
    with pytest.raises(TerminalError) as caught:
        await rt.call("Shapes", handler, body)
    assert caught.value.status_code == 400 and message in caught.value.message
    inv = rt.invocations["inv_local000001"]
    assert (inv.attempts, inv.journal, RAN) == (1, {}, [])


async def test_the_deprecated_type_parameter_names_warn_and_still_work() -> None:
    rt = LocalRuntime([shapes])
    assert await rt.call("Shapes", "old_spellings") == 1
    inv = await rt.start("Shapes", "area", {"width": 4, "height": 1})
    with pytest.warns(DeprecationWarning, match="type_hint"):
        assert inv.result(type_=Point) == Point(4, 0)
    with pytest.warns(DeprecationWarning, match="type_hint"):
        assert await rt.call("Shapes", "area", {"width": 5, "height": 1}, type_=Point) == Point(5, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_typed_state_decodes_into_the_type_hint(mode: Any) -> None:
    rt = LocalRuntime([carts], mode=mode)
    await rt.call("Carts", "add", {"x": 1, "y": 2}, key="c")
    assert await rt.call("Carts", "add", {"x": 3, "y": 4}, key="c") == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


async def test_a_promise_resolution_never_awaited_warns() -> None:
    rt = LocalRuntime([approvals])
    assert await rt.call("Approvals", "run", key="k") == "yes (409)"


def test_schemas_of_dataclass_typeddict_and_pydantic_annotations() -> None:
    infos = {h.name: h for h in shapes.info().handlers}
    assert infos["area"].input_schema == json_schema(Size)
    assert isinstance(infos["area"].input_schema, dict) and infos["area"].input_schema["required"] == [
        "width",
        "height",
    ]
    assert infos["tag"].output_schema == json_schema(Label)
    assert infos["greet"].input_schema == Customer.model_json_schema()


@steps.handler()
async def later(ctx: Context) -> str:
    step = ctx.run("later", fast, "later")
    await ctx.sleep(timedelta(seconds=1))  # the first attempt suspends here, before the await below
    return await step


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_awaited_after_a_suspension_does_not_warn_in_the_attempt_that_suspended(mode: Any) -> None:
    inv = await LocalRuntime([steps], mode=mode).start("Steps", "later")
    assert inv.result(str) == "later" and inv.attempts >= 2


@steps.handler()
async def timed(ctx: Context) -> list[str]:
    early = ctx.sleep(timedelta(milliseconds=1))
    await ctx.sleep(timedelta(hours=1))  # suspends: both timers fire meanwhile
    first, _ = await select(step=ctx.run("late", fast, "late"), timeout=early)  # the timer is done already
    second, _ = await select(step=ctx.run("quick", fast, "quick"), timeout=ctx.sleep(timedelta(hours=1)))
    await ctx.sleep(timedelta(hours=2))  # suspends again: the replay must pick the same winners
    return [first, second]


@pytest.mark.parametrize("mode", MODES)
async def test_select_of_a_step_and_a_timer_is_decided_the_same_on_replay(mode: Any) -> None:
    inv = await LocalRuntime([steps], mode=mode).start("Steps", "timed")
    assert inv.result(list[str]) == ["timeout", "step"]
    assert RAN == ["quick"]  # the completed timer won the first select: its step never ran
    quick = next(e for e in inv.journal.values() if isinstance(e, RunEntry))
    assert quick.name == "quick" and quick.seen_seq == 2  # after the two timers it knew of
