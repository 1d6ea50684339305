"""LocalRuntime keeps the proxy's per-key rules: exclusive handlers queue per key in arrival order,
shared ones do not, and a workflow's run happens once per key."""

from __future__ import annotations

from typing import Any

import pytest

from handlers_sdk import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
)
from handlers_sdk.protocol import AwakeableEntry
from handlers_sdk.testing import Invocation, InvocationSuspendedError, LocalRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


def gate() -> VirtualObject:
    """`hold` waits on an awakeable (keeping its key); `add` appends to the key's log; `log` reads it."""
    obj = VirtualObject("Gate")

    @obj.handler()
    async def hold(ctx: ObjectContext, tag: str) -> str:
        awakeable_id, future = ctx.awakeable(str)
        ctx.set("awakeable", awakeable_id)
        ctx.set("log", [*(await ctx.get("log", list[str]) or []), f"{tag}:start"])
        released: str = await future
        ctx.set("log", [*(await ctx.get("log", list[str]) or []), f"{tag}:{released}"])
        return released

    @obj.handler()
    async def add(ctx: ObjectContext, tag: str) -> list[str]:
        log = [*(await ctx.get("log", list[str]) or []), tag]
        ctx.set("log", log)
        return log

    @obj.handler(kind="shared")
    async def log(ctx: ObjectSharedContext) -> list[str]:
        return await ctx.get("log", list[str]) or []

    return obj


def awakeable_of(rt: LocalRuntime, key: str) -> str:
    return str(rt.state[("Gate", key)]["awakeable"], "utf-8").strip('"')


@pytest.mark.parametrize("mode", MODES)
async def test_exclusive_calls_of_a_busy_key_wait_in_arrival_order(mode: Any) -> None:
    rt = LocalRuntime(gate(), mode=mode)
    holder = await rt.start("Gate", "hold", "h", key="k")
    assert holder.status == "suspended"
    first = await rt.start("Gate", "add", "first", key="k")
    second = await rt.start("Gate", "add", "second", key="k")
    other_key = await rt.start("Gate", "add", "elsewhere", key="other")
    assert (first.status, second.status) == ("pending", "pending")
    assert first.attempts == 0 and second.attempts == 0  # never sent to the handler
    assert other_key.result() == ["elsewhere"]  # another key is not blocked
    # A shared handler reads while the key is held; it does not queue.
    assert await rt.call("Gate", "log", key="k") == ["h:start"]
    with pytest.raises(InvocationSuspendedError, match="pending: Gate key 'k' is held"):
        first.result()

    rt.resolve_awakeable(awakeable_of(rt, "k"), "released")
    await rt.resume(holder)
    assert holder.result() == "released"
    assert first.result() == ["h:start", "h:released", "first"]
    assert second.result() == ["h:start", "h:released", "first", "second"]


async def test_a_paused_holder_keeps_its_key() -> None:
    obj = VirtualObject("Broken")

    @obj.handler()
    async def fail(ctx: ObjectContext) -> None:
        raise RuntimeError("bug")

    @obj.handler()
    async def later(ctx: ObjectContext) -> str:
        return "ran"

    rt = LocalRuntime(obj)
    paused = await rt.start("Broken", "fail", key="k")
    assert paused.status == "paused"
    waiting = await rt.start("Broken", "later", key="k")
    assert waiting.status == "pending"


def _once() -> tuple[Workflow, Service, list[str]]:
    """A workflow whose run logs its input, and a caller that asks for the same run twice."""
    runs: list[str] = []
    wf = Workflow("Once")

    @wf.main()
    async def run(ctx: WorkflowContext, email: str) -> str:
        runs.append(email)
        return f"ran for {email}"

    caller = Service("Caller")

    @caller.handler()
    async def call_twice(ctx: Context, key: str) -> list[Any]:
        first = await ctx.workflow_call(run, key, "a@example.com")
        try:
            await ctx.workflow_call(run, key, "b@example.com")
        except TerminalError as exc:
            return [first, exc.status_code, exc.message]
        return [first, "no error"]

    @caller.handler()
    async def send_twice(ctx: Context, key: str) -> None:
        ctx.workflow_send(run, key, "c@example.com")
        ctx.workflow_send(run, key, "d@example.com")

    return wf, caller, runs


@pytest.mark.parametrize("mode", MODES)
async def test_a_workflows_run_happens_once_per_key(mode: Any) -> None:
    wf, caller, runs = _once()
    rt = LocalRuntime([wf, caller], mode=mode)
    first = await rt.start("Once", "run", "x@example.com", key="u1")
    again = await rt.start("Once", "run", "y@example.com", key="u1")
    assert again is first and again.result() == "ran for x@example.com"  # attaches to the first run
    assert await rt.call("Caller", "call_twice", "u2") == [
        "ran for a@example.com", 409, "workflow 'Once/u2' was already run",
    ]  # fmt: skip
    await rt.call("Caller", "send_twice", "u3")
    assert runs == ["x@example.com", "a@example.com", "c@example.com"]


async def test_a_keyed_call_without_a_key_fails_with_400() -> None:
    obj = gate()
    caller = Service("NoKey")

    @caller.handler()
    async def go(ctx: Context) -> str:
        try:
            await ctx.generic_call("Gate", "add", "x", key="")
        except TerminalError as exc:
            return f"{exc.status_code} {exc.message}"
        return "no error"

    rt = LocalRuntime([obj, caller])
    assert await rt.call("NoKey", "go") == "400 Gate is a keyed object: a key is required"


def turnstile() -> VirtualObject:
    """`hold` keeps its key across two waits on awakeables; `enter` appends to the key's log."""
    obj = VirtualObject("Turnstile")

    @obj.handler()
    async def hold(ctx: ObjectContext, tag: str) -> str:
        _, first = ctx.awakeable(str)
        await first
        _, second = ctx.awakeable(str)
        return f"{tag}: {await second}"

    @obj.handler()
    async def enter(ctx: ObjectContext, tag: str) -> list[str]:
        log = [*(await ctx.get("log", list[str]) or []), tag]
        ctx.set("log", log)
        return log

    return obj


def open_awakeable(inv: Invocation) -> str:
    """The id of the awakeable `inv` waits on."""
    entry = inv.journal[inv.waiting_on[0]]
    assert isinstance(entry, AwakeableEntry)
    return entry.id


@pytest.mark.parametrize("mode", MODES)
async def test_a_free_key_goes_to_the_earliest_waiter_and_a_workflow_runs_once(mode: Any) -> None:
    wf, caller, _ = _once()
    rt = LocalRuntime([turnstile(), wf, caller], mode=mode)
    a = await rt.start("Turnstile", "hold", "a", key="k")
    b = await rt.start("Turnstile", "hold", "b", key="k")
    c = await rt.start("Turnstile", "enter", "c", key="k")
    assert (a.status, b.status, c.status) == ("suspended", "pending", "pending")
    # The holder running again (a new attempt after its first wait) keeps the key.
    rt.resolve_awakeable(open_awakeable(a), "one")
    await rt.resume(a)
    assert a.status == "suspended" and len(a.waiting_on) == 1
    assert (b.status, b.attempts, c.status, c.attempts) == ("pending", 0, "pending", 0)
    # An invocation that neither holds the key nor waits for it completing changes nothing.
    assert await rt.call("Turnstile", "enter", "z", key="other") == ["z"]
    assert (b.status, c.status) == ("pending", "pending")
    # The holder completes: the earliest waiter gets the key; a newcomer queues behind the others.
    rt.resolve_awakeable(open_awakeable(a), "two")
    await rt.resume(a)
    assert a.result() == "a: two"
    assert b.status == "suspended" and b.attempts > 0
    d = await rt.start("Turnstile", "enter", "d", key="k")
    assert (c.status, d.status) == ("pending", "pending")
    # c gives up waiting (cancelled, never run): once b is done, d is next.
    await rt.cancel(c)
    assert c.attempts == 0 and c.is_done
    for _ in range(2):
        rt.resolve_awakeable(open_awakeable(b), "ok")
        await rt.resume(b)
    assert b.result() == "b: ok"
    assert d.result() == ["d"]
    assert rt.state[("Turnstile", "k")] == {"log": b'["d"]'}
    # A workflow key's run is claimed once: asking again gets the first run.
    run = await rt.start("Once", "run", "first@example.com", key="u")
    assert await rt.start("Once", "run", "second@example.com", key="u") is run
    assert run.result() == "ran for first@example.com"
