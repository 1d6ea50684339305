"""check_replay_safety: crash after every step's side effect and before its ack."""

from __future__ import annotations

from typing import Any

import pytest

from examples.orders import Order, orders
from handlers_sdk import TerminalError
from handlers_sdk.replay import Replay
from handlers_sdk.testing import (
    ReplaySafetyError,
    ReplaySafetyReport,
    check_replay_safety,
    check_replay_safety_async,
)
from tests.toolkit import services
from tests.toolkit.services import LEDGER, bad, good

pytestmark = pytest.mark.timeout(60)

MODES = ["ack", "suspend"]
ORDER = Order("o-1", "sku-1", 2, 99.0)


def line_of(needle: str) -> str:
    """``services.py:N`` of the first line of the test services containing `needle`."""
    assert services.__file__ is not None
    with open(services.__file__) as f:
        number = next(n for n, line in enumerate(f, 1) if needle in line)
    return f"services.py:{number}"


@pytest.mark.parametrize("mode", MODES)
def test_the_order_saga_is_replay_safe(mode: Any) -> None:
    report = check_replay_safety(orders, "process", ORDER, mode=mode)
    assert report.ok
    # five steps: a crash before each commit, plus the replay of the complete journal
    assert report.positions == 6
    for crash_at, inv in enumerate(report.runs[:-1]):
        counts = inv.body_counts()
        step_in_flight = report.baseline.commit_log[crash_at]
        assert counts[step_in_flight] == 2
        assert all(n == 1 for i, n in counts.items() if i != step_in_flight)
    assert report.runs[-1].executions == []
    assert "replay-safe: 6 crash positions checked" in report.format()


def test_the_compensation_path_is_replay_safe() -> None:
    report = check_replay_safety(orders, "process", Order("o-2", "sku-1", 1, 50_000.0))
    assert report.ok and report.positions == 4
    with pytest.raises(TerminalError):
        report.baseline.result()


def test_the_fixture(replay_safety: Any) -> None:
    replay_safety(orders, "process", ORDER)
    with pytest.raises(AssertionError, match="not replay-safe"):
        replay_safety(bad, "wall_clock_output", 1)


@pytest.mark.parametrize("handler", ["chain", "fan_out", "seeded", "nap", "parent"])
@pytest.mark.parametrize("mode", MODES)
def test_other_well_behaved_handlers(handler: str, mode: Any) -> None:
    arg = None if handler == "seeded" else 2
    assert check_replay_safety(good, handler, arg, mode=mode).ok


def test_a_random_step_name_is_caught_with_its_source_line() -> None:
    with pytest.raises(ReplaySafetyError) as caught:
        check_replay_safety(bad, "random_name", 1)
    report = caught.value.report
    first = report.first
    assert first is not None and first.kind == "step_name"
    assert first.step.startswith("second-")
    assert first.source.endswith(line_of('f"second-{random'))
    assert line_of('f"second-{random') in str(caught.value)


def test_a_random_step_name_is_a_journal_mismatch_once_its_step_is_journaled() -> None:
    report = check_replay_safety(bad, "random_name", 1, stop_at_first=False, raise_on_failure=False)
    mismatches = [v for v in report.violations if v.kind == "mismatch"]
    # the crash after step 2's side effect resumes from a journal holding "second-<random>"
    assert [v.crash_at for v in mismatches] == [2, 3]
    assert mismatches[0].index == 1
    assert 'journal mismatch at index 1: recorded run "second-' in mismatches[0].message
    assert line_of('f"second-{random') in mismatches[0].message


def test_suspend_mode_catches_it_without_any_crash() -> None:
    report = check_replay_safety(bad, "random_name", 1, mode="suspend", raise_on_failure=False)
    first = report.first
    assert first is not None and first.crash_at is None and first.kind == "mismatch"
    assert "in the crash-free run" in report.format()


def test_an_output_from_the_wall_clock_is_caught() -> None:
    report = check_replay_safety(bad, "wall_clock_output", 1, raise_on_failure=False)
    first = report.first
    assert first is not None and first.kind == "output" and first.crash_at == 0
    # the handler's first line (its decorator)
    assert first.source.endswith(f"services.py:{services.wall_clock_output.__code__.co_firstlineno}")
    text = report.format()
    assert 'after a crash following the side effect of run "first" at index 0' in text
    assert "the output differs" in text


def test_step_arguments_from_the_wall_clock_are_caught() -> None:
    report = check_replay_safety(bad, "wall_clock_args", 1, raise_on_failure=False)
    first = report.first
    assert first is not None and first.kind == "step_args" and first.step == "stamp"
    assert check_replay_safety(bad, "wall_clock_args", 1, check_args=False).ok


def test_a_journaled_step_that_runs_again_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # An SDK that forgets its journal would run every journaled step again on replay.
    monkeypatch.setattr(Replay, "match", lambda self, index, attempted: None)
    report = check_replay_safety(good, "chain", 1, raise_on_failure=False)
    first = report.first
    assert first is not None and first.kind == "ran_twice"
    assert first.crash_at == 1 and first.index == 0 and first.step == "first"
    assert "ran again although it was journaled" in report.format()


def test_side_effects_of_the_baseline_are_recorded() -> None:
    LEDGER.clear()
    report = check_replay_safety(good, "chain", 5)
    assert [(e.index, e.name) for e in report.baseline.executions] == [(0, "first"), (1, "second"), (2, "third")]
    assert report.baseline.result() == 8


@pytest.mark.anyio
async def test_the_async_variant() -> None:
    report = await check_replay_safety_async(orders, "process", ORDER)
    assert isinstance(report, ReplaySafetyReport) and report.ok
    with pytest.raises(RuntimeError, match="check_replay_safety_async"):
        check_replay_safety(orders, "process", ORDER)


def test_the_order_hold_timer_completes_at_once_in_every_crash_run() -> None:
    order = Order("o-3", "sku-1", 1, 10.0, hold_seconds=3600)
    report = check_replay_safety(orders, "process", order)
    assert report.ok, report.format()
    assert "sleep" in [type(e).__name__.removesuffix("Entry").lower() for e in report.baseline.journal.values()]
