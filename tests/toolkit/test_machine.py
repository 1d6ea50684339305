"""LocalRuntime as a shell of the proxy's state machine: what it gets from `durable_core` (idempotency,
refused sends, promise completion from outside, resumption of paused invocations, imported
journals), the clock it gives the SDK, and the toolkit's own additions (completers due later,
observer hooks, awakeables resolved early, state set by the test)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from handlers_sdk import Context, Service, TerminalError, Workflow, WorkflowContext
from handlers_sdk.ack import AckClient
from handlers_sdk.attempt import run_attempt
from handlers_sdk.ids import legacy_child_invocation_id
from handlers_sdk.protocol import (
    AwakeableEntry,
    CallEntry,
    Completed,
    Failure,
    InvokeRequest,
    JournalItem,
    RunEntry,
    SendEntry,
    SleepEntry,
    Suspended,
    awakeable_id,
    child_invocation_id,
)
from handlers_sdk.testing import (
    Completion,
    FakeClock,
    Invocation,
    InvocationPausedError,
    LocalRuntime,
    check_replay_safety,
)
from tests.toolkit.services import LEDGER, good

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


@pytest.fixture(autouse=True)
def _clear_ledger() -> None:
    LEDGER.clear()


def clocked() -> Service:
    """Handlers that read time: a sleep of an odd length, and one returning ``ctx.time()``."""
    svc = Service("Clocked")

    @svc.handler()
    async def nap(ctx: Context, ms: int) -> float:
        await ctx.sleep(timedelta(milliseconds=ms))
        return await ctx.time()

    return svc


@pytest.mark.parametrize("mode", MODES)
async def test_the_handler_reads_the_fake_clock_and_a_timer_fires_at_its_exact_deadline(mode: Any) -> None:
    clock = FakeClock(now_ms=0)
    rt = LocalRuntime(clocked(), mode=mode, clock=clock)
    # 1001 ms is 1.0009999... s: the fake clock must still land on the deadline, not short of it.
    inv = await rt.start("Clocked", "nap", 1001)
    assert inv.result() == 1.001
    assert clock.now_ms() == 1001
    sleep = inv.journal[0]
    assert isinstance(sleep, SleepEntry) and sleep.wake_at_ms == 1001
    stamp = inv.journal[1]
    assert isinstance(stamp, RunEntry) and stamp.name == "ctx.time" and stamp.started_ms == 1001


def test_the_fake_clock_is_moved_to_the_exact_millisecond() -> None:
    # 1001 ms is 1.0009999... s as a float: the wall clock must still land on 1001, not 1000.
    clock = FakeClock(now_ms=0)
    clock.advance_to(1001)
    assert clock.now_ms() == 1001
    clock.advance_to(500)  # never back
    assert clock.now_ms() == 1001
    for _ in range(1000):
        clock.advance(0.001)
    assert clock.now_ms() == 2001


async def test_run_attempt_takes_the_clock_and_an_allocation_observer() -> None:
    svc = Service("Observed")

    @svc.handler()
    async def go(ctx: Context) -> None:
        await ctx.run("step", lambda: 1)
        await ctx.sleep(timedelta(seconds=2))

    request = InvokeRequest(invocation_id="inv_observed", service="Observed", handler="go", attempt=1, token="t")
    allocated: list[int] = []
    outcome = await run_attempt(
        svc.handlers["go"], request, "suspend", AckClient(), clock=FakeClock(now_ms=5_000), on_allocate=allocated.append
    )
    assert isinstance(outcome, Suspended) and allocated == [0]
    step = outcome.entries[0].entry
    assert isinstance(step, RunEntry) and (step.started_ms, step.duration_ms) == (5_000, 0)
    replayed = msgspec.structs.replace(request, journal=outcome.entries)
    outcome = await run_attempt(svc.handlers["go"], replayed, "suspend", AckClient(), clock=FakeClock(now_ms=7_000))
    assert isinstance(outcome, Suspended) and outcome.waiting_on == [1]
    sleep = outcome.entries[0].entry
    assert isinstance(sleep, SleepEntry) and sleep.wake_at_ms == 9_000


async def test_an_idempotency_key_runs_the_invocation_once() -> None:
    rt = LocalRuntime(good)
    first = await rt.start("Good", "chain", 1, idempotency_key="order-1")
    again = await rt.start("Good", "chain", 5, idempotency_key="order-1")
    other = await rt.start("Good", "chain", 5, idempotency_key="order-2")
    assert again is first and first.result() == 4
    assert other.result() == 8
    assert len(rt.invocations) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_an_awakeable_resolved_before_the_handler_creates_it_completes_once_it_does(mode: Any) -> None:
    rt = LocalRuntime(good, mode=mode)
    rt.resolve_awakeable(awakeable_id("inv_local000001", 0), "early")
    inv = await rt.start("Good", "approval", "o-1")
    assert inv.result() == "o-1: early"
    with pytest.raises(ValueError, match="already completed"):
        rt.resolve_awakeable(awakeable_id(inv.id, 0), "twice")
    with pytest.raises(ValueError, match="not an awakeable id"):
        rt.resolve_awakeable("nonsense")


async def test_a_completion_due_later_waits_on_the_fake_clock() -> None:
    clock = FakeClock(now_ms=0)
    rt = LocalRuntime(good, clock=clock)

    async def approve_in_a_minute(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Completion:
        return Completion(msgspec.structs.replace(entry, value=msgspec.Raw(b'"later"')), at_ms=60_000)

    async def fail_the_call(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Completion:
        return Completion(msgspec.structs.replace(entry, failure=Failure(code=418, message="mocked")))

    rt.register_completer(AwakeableEntry, approve_in_a_minute)
    rt.register_completer(CallEntry, fail_the_call)
    assert await rt.call("Good", "approval", "o-2") == "o-2: later"
    assert clock.now_ms() == 60_000
    with pytest.raises(TerminalError, match="mocked"):
        await rt.call("Good", "parent", 1)  # the completer's failure came first; the callee ran anyway
    awakeable = rt.invocations["inv_local000001"].journal[0]
    assert isinstance(awakeable, AwakeableEntry) and (awakeable.completed, awakeable.seq) == (True, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_a_commit_hook_observes_entries_as_journaled(mode: Any) -> None:
    rt = LocalRuntime(good, mode=mode)
    seen: list[tuple[str, int, bool, Failure | None]] = []

    def observe(rt: LocalRuntime, inv: Invocation, index: int, entry: CallEntry) -> None:
        seen.append((inv.handler, index, entry.completed, entry.failure))

    rt.register_commit_hook(CallEntry, observe)
    assert await rt.call("Good", "parent", 2) == 5
    assert seen == [("parent", 0, False, None)]

    caller = Service("Caller")

    @caller.handler()
    async def lost(ctx: Context) -> str:
        try:
            await ctx.generic_call("Nowhere", "x")
        except TerminalError as exc:
            return exc.message
        return "no error"

    rt = LocalRuntime(caller, mode=mode)
    rt.register_commit_hook(CallEntry, observe)
    assert await rt.call("Caller", "lost") == "service 'Nowhere' not found"
    # Refused by the machine as the entry was journaled: the hook sees it completed.
    assert seen[-1] == ("lost", 0, True, Failure(code=404, message="service 'Nowhere' not found"))


async def test_an_exception_in_a_commit_hook_reaches_the_test_not_the_handler() -> None:
    rt = LocalRuntime(good, mode="ack")

    def broken(rt: LocalRuntime, inv: Invocation, index: int, entry: RunEntry) -> None:
        raise RuntimeError(f"hook bug at {index}")

    rt.register_commit_hook(RunEntry, broken)
    with pytest.raises(RuntimeError, match="hook bug at 0"):
        await rt.start("Good", "chain", 1)
    inv = rt.invocations["inv_local000001"]
    assert inv.result() == 4  # the handler never saw it


@pytest.mark.parametrize("mode", MODES)
async def test_a_send_to_an_unknown_service_is_refused_as_the_proxy_refuses_it(mode: Any) -> None:
    svc = Service("Sender")

    @svc.handler()
    async def fire(ctx: Context) -> str:
        ctx.generic_send("Nowhere", "x")
        return "sent"

    rt = LocalRuntime(svc, mode=mode)
    inv = await rt.start("Sender", "fire")
    assert inv.status == "paused" and inv.sends == []
    with pytest.raises(InvocationPausedError, match="not found"):
        inv.result()


async def test_a_paused_invocation_resumes_with_a_new_attempt() -> None:
    svc = Service("Stubborn")
    failures = [RuntimeError("down")]

    @svc.handler()
    async def go(ctx: Context) -> str:
        if failures:
            raise failures.pop()
        return "up"

    rt = LocalRuntime(svc, mode="ack")
    inv = await rt.start("Stubborn", "go")
    assert inv.status == "paused" and inv.attempts == 1
    await rt.resume(inv.id)
    assert inv.result() == "up" and inv.attempts == 2 and inv.retries == 0


async def test_state_can_be_replaced_and_read_as_the_admin_api_does() -> None:
    from examples.counter import counter

    rt = LocalRuntime(counter)
    rt.state[("Counter", "a")] = {"count": b"41"}
    assert await rt.call("Counter", "add", 1, key="a") == 42
    assert await rt.call("Counter", "add", 5, key="b") == 5
    assert dict(rt.state) == {("Counter", "a"): {"count": b"42"}, ("Counter", "b"): {"count": b"5"}}
    del rt.state[("Counter", "a")]
    assert ("Counter", "a") not in rt.state and len(rt.state) == 1
    assert await rt.call("Counter", "get", key="a") == 0
    with pytest.raises(KeyError):
        del rt.state[("Counter", "a")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_promise_rejected_from_outside_fails_its_waiter(mode: Any) -> None:
    from examples.signup import signup

    rt = LocalRuntime(signup, mode=mode)
    run = await rt.start("Signup", "run", "ada@example.com", key="u1")
    assert run.status == "suspended" and dict(rt.promises) == {}
    rt.reject_promise("Signup", "u1", "email-link", "link expired", 410)
    await rt.resume(run)
    with pytest.raises(TerminalError, match="link expired") as caught:
        run.result()
    assert caught.value.status_code == 410
    failure = Failure(code=410, message="link expired")
    assert dict(rt.promises) == {("Signup", "u1", "email-link"): (b"null", failure)}
    with pytest.raises(ValueError, match="already completed"):
        rt.resolve_promise("Signup", "u1", "email-link", "late")
    with pytest.raises(ValueError, match="not a workflow"):
        rt.resolve_promise("Counter", "u1", "email-link")


async def test_a_journal_to_start_from_arms_the_waits_it_left_open() -> None:
    done = await LocalRuntime(good, clock=FakeClock(now_ms=0)).start("Good", "nap", 1)
    before, sleep = done.journal_items[:2]
    assert isinstance(sleep.entry, SleepEntry) and sleep.entry.completed
    open_sleep = JournalItem(index=1, entry=msgspec.structs.replace(sleep.entry, completed=False, seq=0))
    LEDGER.clear()
    clock = FakeClock(now_ms=0)
    inv = await LocalRuntime(good, clock=clock).start("Good", "nap", 1, journal=[before, open_sleep])
    assert inv.result() == "1"
    assert clock.now_ms() == 2 * 3600_000  # the imported sleep's timer fired, then the second's
    assert [name for name, _ in LEDGER] == ["after"]
    seqs = [e.seq for e in inv.journal.values() if isinstance(e, SleepEntry)]
    assert seqs == [1, 2]


def callee_seeds() -> list[Service]:
    """A parent whose result is what its callee drew from ``ctx.random()``."""
    parent, child = Service("Parent"), Service("Child")

    @child.handler()
    async def draw(ctx: Context) -> int:
        return ctx.random().randint(0, 10**9)

    @parent.handler()
    async def ask(ctx: Context) -> int:
        value: int = await ctx.service_call(draw)
        return int(await ctx.run("keep", lambda: value))

    return [parent, child]


async def test_callees_get_the_runtime_seed_so_that_runs_repeat() -> None:
    first = await LocalRuntime(callee_seeds(), random_seed=3).call("Parent", "ask")
    again = await LocalRuntime(callee_seeds(), random_seed=3).call("Parent", "ask")
    other = await LocalRuntime(callee_seeds(), random_seed=4).call("Parent", "ask")
    assert first == again != other
    rt = LocalRuntime(callee_seeds(), random_seed=3)
    await rt.call("Parent", "ask")
    assert {inv.random_seed for inv in rt.invocations.values()} == {3}


def test_a_parent_with_a_random_callee_is_replay_safe() -> None:
    report = check_replay_safety(callee_seeds(), "ask", target="Parent")
    assert report.ok, report.format()


async def test_invocation_ids_must_be_usable_in_awakeable_ids() -> None:
    rt = LocalRuntime(good)
    with pytest.raises(ValueError, match="must be 'inv_'"):
        await rt.start("Good", "chain", 1, invocation_id="my-order")
    await rt.start("Good", "chain", 1, invocation_id="inv_mine")
    with pytest.raises(ValueError, match="already used"):
        await rt.start("Good", "chain", 1, invocation_id="inv_mine")


async def test_a_workflow_run_waits_for_a_delayed_signal() -> None:
    wf = Workflow("Delayed")

    @wf.main()
    async def run(ctx: WorkflowContext) -> str:
        ctx.workflow_send(signal, ctx.key(), "go", send_delay=timedelta(minutes=10))
        value: str = await ctx.promise("signal").value()
        return value

    @wf.handler()
    async def signal(ctx: Any, value: str) -> None:
        await ctx.promise("signal").resolve(value)

    clock = FakeClock(now_ms=0)
    rt = LocalRuntime(wf, clock=clock)
    inv = await rt.start("Delayed", "run", key="k")
    assert inv.result() == "go" and clock.now_ms() == 600_000
    (sent,) = inv.sends
    assert rt.invocations[sent].result() is None
    assert isinstance(rt.invocations[sent].outcome, Completed)


async def test_a_replayed_send_hands_out_the_child_id_its_journal_holds() -> None:
    """An entry journaled before Restate's id format (an older SDK's child id) keeps its id on a
    replay: the handle names the child that exists, not one derived by the current rule."""
    svc = Service("Sender")

    @svc.handler()
    async def go(ctx: Context) -> list[str]:
        return [
            ctx.generic_send("Greeter", "greet", "Ada").invocation_id,
            ctx.generic_send("Greeter", "greet").invocation_id,
        ]

    parent = "inv_06h10pn5ug0kun4knfugrrgr5k"
    journaled = SendEntry(service="Greeter", handler="greet", input=msgspec.Raw(b'"Ada"'),
                          invocation_id=legacy_child_invocation_id(parent, 0))  # fmt: skip
    request = InvokeRequest(
        invocation_id=parent, service="Sender", handler="go", attempt=2, token="t",
        journal=[JournalItem(index=0, entry=journaled)],
    )  # fmt: skip
    outcome = await run_attempt(svc.handlers["go"], request, "suspend", AckClient())
    assert isinstance(outcome, Completed)
    assert msgspec.json.decode(outcome.value) == [journaled.invocation_id, child_invocation_id(parent, 1)]
