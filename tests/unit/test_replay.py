"""handlers_sdk/replay.py: index allocation in creation order, gaps, and named mismatch errors."""

from __future__ import annotations

import msgspec
import pytest

from handlers_sdk.errors import JOURNAL_MISMATCH, JournalMismatchError
from handlers_sdk.protocol import Failure, JournalItem, PatchEntry, RunEntry, SleepEntry, decode_item, encode
from handlers_sdk.replay import Replay, describe


def run(index: int, name: str, value: bytes = b"null") -> JournalItem:
    return JournalItem(index=index, entry=RunEntry(name=name, value=msgspec.Raw(value)))


def test_allocation_counts_from_zero_in_creation_order() -> None:
    replay = Replay([])
    assert replay.next_index == 0
    assert [replay.allocate() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert replay.next_index == 5


def test_allocation_does_not_depend_on_the_journal() -> None:
    # Indexes are creation order, whatever was recorded (so replays allocate the same ones).
    replay = Replay([run(0, "a"), run(3, "d")])
    assert [replay.allocate() for _ in range(4)] == [0, 1, 2, 3]
    assert replay.recorded_count == 2


def test_new_steps_are_not_in_the_journal() -> None:
    replay = Replay([])
    assert replay.match_run(replay.allocate(), "a") is None


def test_recorded_step_is_returned_with_its_value() -> None:
    replay = Replay([run(0, "charge", b'{"id":7}')])
    recorded = replay.match_run(replay.allocate(), "charge")
    assert recorded is not None
    assert recorded.name == "charge" and bytes(recorded.value) == b'{"id":7}'


def test_recorded_failure_is_returned() -> None:
    item = JournalItem(index=0, entry=RunEntry(name="s", failure=Failure(code=413, message="too large")))
    recorded = Replay([item]).match_run(0, "s")
    assert recorded is not None and recorded.failure == Failure(code=413, message="too large")


def test_gaps_are_operations_that_run_again() -> None:
    # Step 1 of a gather was acked, step 0 was not: 0 runs again, 1 is replayed, 2 is new.
    replay = Replay([run(1, "b", b"2")])
    assert replay.match_run(replay.allocate(), "a") is None
    recorded = replay.match_run(replay.allocate(), "b")
    assert recorded is not None and bytes(recorded.value) == b"2"
    assert replay.match_run(replay.allocate(), "c") is None


def test_journal_order_in_the_input_does_not_matter() -> None:
    forward = Replay([run(0, "a"), run(1, "b")])
    backward = Replay(iter([run(1, "b"), run(0, "a")]))
    for replay in (forward, backward):
        assert replay.match_run(0, "a") is not None
        assert replay.match_run(1, "b") is not None


def test_same_name_at_several_indexes() -> None:
    replay = Replay([run(0, "poll", b"1"), run(1, "poll", b"2")])
    first, second = replay.match_run(0, "poll"), replay.match_run(1, "poll")
    assert first is not None and second is not None
    assert (bytes(first.value), bytes(second.value)) == (b"1", b"2")


def test_renamed_step_is_a_named_mismatch() -> None:
    replay = Replay([run(0, "a"), run(1, "charge")])
    replay.match_run(replay.allocate(), "a")
    with pytest.raises(JournalMismatchError) as info:
        replay.match_run(replay.allocate(), "refund")
    error = info.value
    assert str(error) == 'journal mismatch at index 1: recorded run "charge", replay attempted run "refund"'
    assert (error.index, error.recorded, error.attempted) == (1, 'run "charge"', 'run "refund"')
    assert error.code == JOURNAL_MISMATCH == 570


def test_other_kind_at_the_index_is_a_mismatch() -> None:
    replay = Replay([JournalItem(index=0, entry=SleepEntry(name="nap", wake_at_ms=1))])
    with pytest.raises(JournalMismatchError) as info:
        replay.match_run(0, "nap")
    assert info.value.index == 0
    assert info.value.attempted == 'run "nap"'
    assert "sleep" in info.value.recorded
    assert "journal mismatch at index 0" in str(info.value)


def test_names_are_compared_exactly() -> None:
    replay = Replay([run(0, "Step")])
    with pytest.raises(JournalMismatchError):
        replay.match_run(0, "step")
    with pytest.raises(JournalMismatchError):
        replay.match_run(0, "Step ")


def test_source_and_value_are_not_compared() -> None:
    item = JournalItem(index=0, entry=RunEntry(name="a", value=msgspec.Raw(b"1"), source="old.py:1"))
    assert Replay([item]).match_run(0, "a") is not None


def test_describe_run_entries() -> None:
    assert describe(RunEntry(name="charge card")) == 'run "charge card"'
    assert describe(RunEntry(name="")) == 'run ""'


def test_a_patch_marker_is_matched_by_name_and_described() -> None:
    replay = Replay([JournalItem(index=0, entry=PatchEntry(name="new-shipping"))])
    assert replay.match(0, PatchEntry(name="new-shipping")) == PatchEntry(name="new-shipping")
    with pytest.raises(JournalMismatchError, match='recorded patch "new-shipping"'):
        replay.match(0, PatchEntry(name="other"))
    assert describe(PatchEntry(name="x")) == 'patch "x"'
    wire = encode(JournalItem(index=0, entry=PatchEntry(name="x")))
    assert wire == b'{"index":0,"entry":{"type":"patch","name":"x"}}' and decode_item(wire).entry == PatchEntry(
        name="x"
    )


def test_passed_tells_whether_the_recorded_journal_reaches_an_index() -> None:
    # A gap below the last recorded index is an operation created but not journaled: the code went past it.
    replay = Replay([run(0, "a"), run(2, "c")])
    assert [replay.passed(i) for i in range(4)] == [True, True, True, False]
    assert replay.recorded(1) is None and replay.recorded(2) == run(2, "c").entry
    assert not Replay([]).passed(0)
