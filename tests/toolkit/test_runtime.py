"""LocalRuntime: the in-process stand-in for the proxy."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from examples.orders import Order, orders
from handlers_sdk import JournalMismatchError, TerminalError
from handlers_sdk.protocol import AwakeableEntry, JournalItem, RunEntry, SleepEntry
from handlers_sdk.testing import (
    Completion,
    FakeClock,
    Invocation,
    InvocationPausedError,
    InvocationSuspendedError,
    LocalRuntime,
)
from tests.toolkit.services import LEDGER, flaky, good, line_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]
ORDER = Order("o-1", "sku-1", 2, 99.0)


@pytest.fixture(autouse=True)
def _clear_ledger() -> None:
    LEDGER.clear()


def names(inv: Invocation) -> list[str]:
    return [e.name for e in inv.journal.values() if isinstance(e, RunEntry)]


@pytest.mark.parametrize("mode", MODES)
async def test_order_saga_completes_with_one_run_of_each_step(mode: Any) -> None:
    rt = LocalRuntime([orders], mode=mode)
    inv = await rt.start(orders, "process", ORDER)
    assert inv.status == "completed"
    assert inv.result(str).startswith("Order o-1 fulfilled (charge ch_")
    assert names(inv) == ["reserve", "charge", "label", "email", "complete"]
    assert inv.body_counts() == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
    # suspend mode re-invokes after every step (each step boundary is a replay); ack mode never needs to
    assert inv.attempts == (6 if mode == "suspend" else 1)


@pytest.mark.parametrize("mode", MODES)
async def test_declined_card_raises_terminal_error_after_compensation(mode: Any) -> None:
    rt = LocalRuntime([orders], mode=mode)
    with pytest.raises(TerminalError) as caught:
        await rt.call("OrderFulfillment", "process", Order("o-2", "sku-1", 1, 50_000.0))
    assert caught.value.status_code == 402
    inv = rt.invocations["inv_local000001"]
    assert names(inv) == ["reserve", "charge", "release"]
    charge = inv.journal[1]
    assert isinstance(charge, RunEntry) and charge.failure is not None and charge.failure.code == 402


async def test_journal_items_are_wire_format_with_source_lines() -> None:
    inv = await LocalRuntime(orders).start("OrderFulfillment", "process", ORDER)
    items = inv.journal_items
    assert [i.index for i in items] == [0, 1, 2, 3, 4]
    first = items[0].entry
    assert isinstance(first, RunEntry) and first.source.endswith(line_of("examples.orders", 'ctx.run("reserve"'))
    assert msgspec.json.decode(msgspec.json.encode(items), type=list[JournalItem]) == items


@pytest.mark.parametrize("mode", MODES)
async def test_gather_of_steps(mode: Any) -> None:
    inv = await LocalRuntime(good, mode=mode).start("Good", "fan_out", 1)
    assert inv.result() == [2, 12, 1, 15]
    assert names(inv) == ["a", "b", "c", "sum"]
    assert sorted(inv.body_counts().values()) == [1, 1, 1, 1]


async def test_ctx_random_is_seeded_per_invocation() -> None:
    rt = LocalRuntime(good)
    first = await rt.call("Good", "seeded", random_seed=7)
    again = await rt.call("Good", "seeded", random_seed=7)
    other = await rt.call("Good", "seeded", random_seed=8)
    assert first == again != other


@pytest.mark.parametrize("mode", MODES)
async def test_crash_at_drops_the_entry_and_reruns_only_the_step_in_flight(mode: Any) -> None:
    inv = await LocalRuntime(good, mode=mode).start("Good", "chain", 1, crash_at=1)
    assert inv.result() == 4
    assert inv.journal_at_crash == frozenset({0})
    assert inv.body_counts() == {0: 1, 1: 2, 2: 1}
    assert LEDGER == [("add_one", 1), ("add_one", 2), ("add_one", 2), ("add_one", 3)]
    assert not any(e.journaled for e in inv.executions)


async def test_a_journal_to_start_from_is_replayed_without_running_its_steps() -> None:
    done = await LocalRuntime(good).start("Good", "chain", 1)
    LEDGER.clear()
    inv = await LocalRuntime(good).start("Good", "chain", 1, journal=done.journal_items[:2])
    assert inv.result() == 4
    assert inv.body_counts() == {2: 1}
    assert LEDGER == [("add_one", 3)]


@pytest.mark.parametrize("mode", MODES)
async def test_sleeps_complete_at_once_and_advance_the_fake_clock(mode: Any) -> None:
    clock = FakeClock(now_ms=1_000_000)
    inv = await LocalRuntime(good, mode=mode, clock=clock).start("Good", "nap", 3)
    assert inv.result() == "3"
    assert 6 * 3600_000 <= clock.now_ms() - 1_000_000 < 6 * 3600_000 + 60_000
    sleeps = [e for e in inv.journal.values() if isinstance(e, SleepEntry)]
    assert [(s.completed, s.seq) for s in sleeps] == [(True, 1), (True, 2)]


async def test_an_unresolved_awakeable_suspends_until_resolved() -> None:
    rt = LocalRuntime(good)
    inv = await rt.start("Good", "approval", "o-9")
    assert inv.status == "suspended"
    with pytest.raises(InvocationSuspendedError, match="awakeable"):
        inv.result()
    entry = inv.journal[inv.waiting_on[0]]
    assert isinstance(entry, AwakeableEntry)
    assert [("notify", entry.id)] == LEDGER
    rt.resolve_awakeable(entry.id, "approved")
    await rt.resume(inv)
    assert inv.result() == "o-9: approved"
    assert [("notify", entry.id)] == LEDGER


async def test_a_rejected_awakeable_raises_terminal_error() -> None:
    rt = LocalRuntime(good)
    inv = await rt.start("Good", "approval", "o-9")
    entry = inv.journal[inv.waiting_on[0]]
    assert isinstance(entry, AwakeableEntry)
    rt.reject_awakeable(entry.id, "nope", 403)
    await rt.resume(inv)
    with pytest.raises(TerminalError, match="nope"):
        inv.result()


@pytest.mark.parametrize("mode", MODES)
async def test_calls_run_the_callee_in_process(mode: Any) -> None:
    rt = LocalRuntime(good, mode=mode)
    assert await rt.call("Good", "parent", 5) == 11
    assert len(rt.invocations) == 2


async def test_custom_completer_for_an_entry_kind() -> None:
    rt = LocalRuntime(good)
    seen: list[int] = []

    async def approve_everything(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Completion:
        seen.append(index)
        return Completion(msgspec.structs.replace(entry, completed=True, value=msgspec.Raw(b'"auto"')))

    rt.register_completer(AwakeableEntry, approve_everything)
    assert await rt.call("Good", "approval", "o-1") == "o-1: auto"
    assert seen == [0]


async def test_retryable_errors_pause_by_default_with_the_stack_trace() -> None:
    rt = LocalRuntime(flaky)
    with pytest.raises(InvocationPausedError, match="RetryableError: not yet") as caught:
        await rt.call("Flaky", "once", "k1")
    assert "fail_once" in str(caught.value)


async def test_retries_advance_the_clock_by_retry_after() -> None:
    clock = FakeClock(now_ms=0)
    rt = LocalRuntime(flaky, max_retries=3, clock=clock)
    inv = await rt.start("Flaky", "once", "k2")
    assert inv.result() == "k2"
    assert inv.retries == 1
    assert clock.now_ms() == 5 * 60_000
    assert inv.body_counts() == {0: 1}


async def test_a_changed_journal_pauses_with_a_mismatch() -> None:
    done = await LocalRuntime(good).start("Good", "chain", 1)
    tampered = [JournalItem(index=0, entry=RunEntry(name="zeroth", value=msgspec.Raw(b"2")))]
    inv = await LocalRuntime(good).start("Good", "chain", 1, journal=tampered)
    assert inv.status == "paused"
    with pytest.raises(JournalMismatchError) as caught:
        inv.result()
    assert caught.value.index == 0
    assert caught.value.recorded == 'run "zeroth"'
    assert caught.value.attempted == 'run "first"'
    assert done.status == "completed"


async def test_unknown_targets_fail_fast() -> None:
    rt = LocalRuntime(good)
    with pytest.raises(KeyError, match="no service 'Nope'"):
        await rt.start("Nope", "x")
    with pytest.raises(KeyError, match="no handler 'nope'"):
        await rt.start("Good", "nope")


async def test_the_order_hold_timer_fires_at_once_on_the_fake_clock() -> None:
    rt = LocalRuntime([orders])
    before = rt.clock.now_ms()
    result = await rt.call("OrderFulfillment", "process", Order("o-3", "sku-1", 1, 10.0, hold_seconds=3600))
    assert result.startswith("Order o-3 fulfilled")
    assert 3_600_000 <= rt.clock.now_ms() - before < 3_660_000


def test_the_toolkit_needs_neither_the_proxy_nor_pytest() -> None:
    import subprocess
    import sys

    code = (
        "import sys, handlers_sdk.testing, handlers_sdk.__main__\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'proxy', 'starlette', 'uvicorn', 'lmdb', 'pytest'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
