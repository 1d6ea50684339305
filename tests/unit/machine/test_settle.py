"""`Machine.settle`: what each outcome of an attempt does to the invocation."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from durable_core.errors import Fenced
from durable_core.keys import expiry_key, timer_key
from durable_core.lifecycle import AttemptFailure, errored_failure
from durable_core.records import Status
from handlers_sdk.protocol import (
    CallEntry,
    Completed,
    Errored,
    Failed,
    Failure,
    JournalItem,
    Outcome,
    RunEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    Suspended,
    child_invocation_id,
)
from tests.unit.machine.world import MAX_ATTEMPTS, NOW, RETENTION_MS, RETRY_INITIAL_MS, World

RAW = msgspec.Raw
BOOM = Failure(code=503, message="unreachable")


@pytest.mark.parametrize(
    ("outcome", "result", "failure"),
    [
        pytest.param(Completed(value=RAW(b'"hi"')), b'"hi"', None, id="completed"),
        pytest.param(
            Failed(failure=Failure(code=422, message="no")), None, Failure(code=422, message="no"), id="failed"
        ),
    ],
)
def test_a_final_outcome_completes_the_invocation(
    world: World, outcome: Outcome, result: bytes | None, failure: Failure | None
) -> None:
    """Completed and Failed complete the invocation (result or failure, retention set, token
    cleared), drop it from the active index, index it for retention, and report it finished."""
    record = world.start()
    world.now = NOW + 10
    done, effects, applied = world.settle(record, outcome)
    assert applied == outcome
    assert (done.status, done.token, done.result, done.failure) == ("completed", "", result, failure)
    assert (done.completed_ms, done.expires_ms) == (NOW + 10, NOW + 10 + RETENTION_MS)
    assert world.record(record.id) == done
    assert effects.completed == [done]
    assert effects.launch == [] and effects.retry == []
    assert world.keys("active") == []
    assert world.keys("expiry") == [expiry_key(NOW + 10 + RETENTION_MS, record.id)]


def test_a_final_outcomes_entries_are_journaled_with_it(world: World) -> None:
    """Entries carried by a final outcome are journaled and applied before the completion."""
    record = world.start("Counter", "add", "k")
    entries = [
        JournalItem(index=0, entry=RunEntry(name="s", value=RAW(b"1"))),
        JournalItem(index=1, entry=SetStateEntry(key="n", value=RAW(b"2"))),
    ]
    done, _, _ = world.settle(record, Completed(value=RAW(b"2"), entries=entries))
    assert done.status == "completed"
    assert world.items(record.id) == entries
    assert world.read(lambda txn: world.machine.state(txn, "Counter", "k")) == {"n": b"2"}


def test_a_suspension_on_an_open_entry_suspends(world: World) -> None:
    """Suspended waiting on an entry nobody completed yet (here a sleep the outcome carries)
    suspends: no attempt, no token, the indexes it waits on recorded, its timer armed."""
    record = world.start()
    sleep = JournalItem(index=0, entry=SleepEntry(wake_at_ms=NOW + 500))
    done, effects, _ = world.settle(record, Suspended(entries=[sleep], waiting_on=[0]))
    assert (done.status, done.token, done.attempt, done.waiting_on) == ("suspended", "", record.attempt, [0])
    assert effects.launch == [] and effects.retry == [] and effects.completed == []
    assert effects.wake_at == NOW + 500
    assert world.keys("timers") == [timer_key(NOW + 500, record.id, 0)]


def test_a_suspension_on_entries_journaled_earlier_sorts_them(world: World) -> None:
    """Waiting on entries acked before the outcome works the same; the indexes are kept sorted."""
    record = world.start()
    world.append(record, 0, SleepEntry(wake_at_ms=NOW + 500))
    world.append(record, 1, SleepEntry(wake_at_ms=NOW + 900))
    done, _, _ = world.settle(record, Suspended(waiting_on=[1, 0]))
    assert (done.status, done.waiting_on) == ("suspended", [0, 1])


@pytest.mark.parametrize("how", ["timer-fired", "failed-call"])
def test_a_suspension_on_an_already_completed_entry_starts_the_next_attempt(world: World, how: str) -> None:
    """If something a suspension waits on completed meanwhile (a timer fired while the attempt
    ran, a call completed on the spot), the next attempt starts at once with `next_token`."""
    record = world.start()
    if how == "timer-fired":
        world.append(record, 0, SleepEntry(wake_at_ms=NOW))
        world.fire_due()
    else:
        call = CallEntry(service="Nope", handler="x", invocation_id=child_invocation_id(record.id, 0))
        world.append(record, 0, call)
    world.append(record, 1, SleepEntry(wake_at_ms=NOW + 10_000))
    done, effects, _ = world.settle(record, Suspended(waiting_on=[1, 0]), next_token="tok-2")
    assert (done.status, done.attempt, done.token, done.waiting_on) == ("running", record.attempt + 1, "tok-2", [])
    assert effects.launch == [done]


def test_a_suspension_with_entries_and_nothing_to_wait_on_reinvokes_at_once(world: World) -> None:
    """Suspended with new entries and an empty waiting_on means "re-invoke now": a new attempt."""
    record = world.start()
    entries = [JournalItem(index=0, entry=RunEntry(name="s"))]
    done, effects, _ = world.settle(record, Suspended(entries=entries), next_token="tok-2")
    assert (done.status, done.attempt, done.token) == ("running", record.attempt + 1, "tok-2")
    assert effects.launch == [done]
    assert world.items(record.id) == entries


def test_a_suspension_without_progress_is_a_571_attempt_failure(world: World) -> None:
    """Suspended with neither entries nor anything to wait on would loop forever: it counts as
    a failed attempt (571, protocol violation) and backs off."""
    record = world.start()
    done, effects, applied = world.settle(record, Suspended())
    assert isinstance(applied, AttemptFailure) and applied.failure.code == 571
    assert (done.status, done.retry_count) == ("backing-off", 1)
    assert done.last_failure == applied.failure
    assert effects.retry == [done]


def test_an_error_asking_to_pause_pauses(world: World) -> None:
    """Errored with behavior "pause" (a journal mismatch) pauses at once: no retry, the failure
    (with its related entry) visible, the retry count unchanged."""
    record = world.start()
    error = Errored(code=570, message="mismatch", behavior="pause", related_index=3, related_name='run "charge"')
    done, effects, applied = world.settle(record, error)
    assert applied == error
    assert (done.status, done.token, done.retry_count, done.next_retry_ms) == ("paused", "", 0, 0)
    assert done.last_failure == Failure(code=570, message='mismatch (journal index 3: run "charge")')
    assert effects.launch == [] and effects.retry == [] and effects.completed == []


def test_an_attempt_failure_marked_pause_pauses_at_once(world: World) -> None:
    """An answer over the response limit (AttemptFailure with `pause`) pauses on the first attempt,
    with the failure visible and no retry armed, instead of 70 retries that re-run the handler."""
    record = world.put(msgspec.structs.replace(world.start(), retry_count=2))
    too_large = Failure(code=413, message="handler response larger than 100 bytes")
    done, effects, applied = world.settle(record, AttemptFailure(too_large, pause=True))
    assert applied == AttemptFailure(too_large, pause=True)
    assert (done.status, done.token, done.retry_count, done.next_retry_ms) == ("paused", "", 3, 0)
    assert done.last_failure == too_large
    assert effects.launch == [] and effects.retry == [] and effects.completed == []


@pytest.mark.parametrize(
    ("retry_count", "retry_after_ms", "status", "delay_ms"),
    [
        pytest.param(0, None, "backing-off", RETRY_INITIAL_MS, id="first-failure"),
        pytest.param(1, None, "backing-off", 2 * RETRY_INITIAL_MS, id="doubles"),
        pytest.param(0, 5_000, "backing-off", 5_000, id="retry-after-longer-wins"),
        pytest.param(0, 10, "backing-off", RETRY_INITIAL_MS, id="retry-after-shorter-ignored"),
        pytest.param(MAX_ATTEMPTS - 1, None, "paused", None, id="exhausted-pauses"),
    ],
)
@pytest.mark.parametrize("kind", ["errored", "attempt-failure"])
def test_a_failed_attempt_backs_off_then_pauses_when_retries_are_exhausted(
    world: World, kind: str, retry_count: int, retry_after_ms: int | None, status: Status, delay_ms: int | None
) -> None:
    """A retryable error or an attempt failure (network, 5xx, garbage) backs off by the policy
    (or Retry-After if longer) and is handed to the retry timer; the failure that exhausts the
    retries pauses the invocation instead."""
    record = world.put(msgspec.structs.replace(world.start(), retry_count=retry_count))
    result: Outcome | AttemptFailure = (
        Errored(code=503, message="unreachable", retry_after_ms=retry_after_ms)
        if kind == "errored"
        else AttemptFailure(BOOM, retry_after_ms=retry_after_ms)
    )
    done, effects, _ = world.settle(record, result)
    assert (done.status, done.token, done.retry_count) == (status, "", retry_count + 1)
    assert done.last_failure == BOOM
    if delay_ms is None:
        assert (done.next_retry_ms, effects.retry) == (0, [])
    else:
        assert done.next_retry_ms == NOW + delay_ms
        assert effects.retry == [done]
    assert effects.launch == [] and effects.completed == []


def _send_to(service: str, parent_id: str, index: int) -> JournalItem:
    entry = SendEntry(service=service, handler="greet", invocation_id=child_invocation_id(parent_id, index))
    return JournalItem(index=index, entry=entry)


@pytest.mark.parametrize(
    ("make_entries", "code"),
    [
        pytest.param(lambda inv: [_send_to("Nope", inv, 1)], 404, id="send-to-unknown-service"),
        pytest.param(
            lambda inv: [
                JournalItem(index=1, entry=SendEntry(service="Greeter", handler="greet", invocation_id="inv_x"))
            ],
            400,
            id="wrong-child-id",
        ),
        pytest.param(lambda inv: [JournalItem(index=1, entry=SetStateEntry(key="a"))], 400, id="state-in-a-service"),
        pytest.param(lambda inv: [JournalItem(index=50, entry=RunEntry(name="s"))], 413, id="journal-full"),
    ],
)
@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_refused_outcome_entries_fail_the_attempt(
    world: World, make_entries: Callable[[str], list[JournalItem]], code: int, outcome: str
) -> None:
    """If a final outcome carries entries the rules refuse, none of them is journaled (nor their
    effects: the sleep before the bad entry arms nothing), the invocation does not complete, and
    the attempt counts as failed with the refusal's status."""
    record = world.start()
    entries = [JournalItem(index=0, entry=SleepEntry(wake_at_ms=NOW + 5)), *make_entries(record.id)]
    result: Outcome = Completed(entries=entries) if outcome == "completed" else Failed(failure=BOOM, entries=entries)
    done, effects, applied = world.settle(record, result)
    assert isinstance(applied, AttemptFailure)
    assert applied.failure.code == code and applied.failure.message.startswith("outcome refused")
    assert (done.status, done.retry_count) == ("backing-off", 1)
    assert world.items(record.id) == []
    assert world.keys("timers") == []
    assert effects.wake_at is None and effects.completed == [] and effects.retry == [done]
    assert world.keys("invocations") == [record.id.encode()]


def test_an_outcome_entry_at_a_taken_index_fails_the_attempt(world: World) -> None:
    """The current attempt's outcome rewriting a journaled index (another operation there) is a
    failed attempt: the journal keeps the first entry and the invocation backs off for a retry,
    rather than being dropped as stale and left running with nothing in flight."""
    record = world.start()
    world.append(record, 0, RunEntry(name="first"))
    done, effects, applied = world.settle(
        record, Completed(entries=[JournalItem(index=0, entry=RunEntry(name="other"))])
    )
    assert isinstance(applied, AttemptFailure)
    assert applied.failure.code == 409 and "already taken" in applied.failure.message
    assert (done.status, done.retry_count) == ("backing-off", 1)
    assert effects.retry == [done] and effects.completed == []
    assert [item.entry for item in world.items(record.id)] == [RunEntry(name="first")]


@pytest.mark.parametrize(
    ("attempt_delta", "token", "status"),
    [
        pytest.param(-1, None, "running", id="older-attempt"),
        pytest.param(0, "stolen", "running", id="wrong-token"),
        pytest.param(0, None, "suspended", id="suspended"),
        pytest.param(0, None, "paused", id="paused"),
        pytest.param(0, None, "completed", id="completed"),
    ],
)
def test_the_outcome_of_a_stale_attempt_is_fenced(
    world: World, attempt_delta: int, token: str | None, status: Status
) -> None:
    """Only the current running attempt may settle; any other outcome is Fenced and ignored."""
    record = world.start()
    stored = world.put(msgspec.structs.replace(record, status=status))
    with pytest.raises(Fenced):
        world.write(
            lambda txn: world.machine.settle(
                txn, record.id, record.attempt + attempt_delta, token or record.token, Completed(), now=NOW,
                next_token="t",
            )
        )  # fmt: skip
    assert world.record(record.id) == stored
    with pytest.raises(Fenced):
        world.write(lambda txn: world.machine.settle(txn, "inv_gone", 1, "t", Completed(), now=NOW, next_token="t"))


def test_an_oversized_step_result_in_an_outcome_is_journaled_as_a_413_step_failure(world: World) -> None:
    """A step result over the entry limit (2 KiB here) carried by an outcome is replaced by a
    terminal 413 failure of that step, as an ack of it would have been refused."""
    record = world.start()
    big = RunEntry(name="s", value=RAW(b'"' + b"x" * 4_096 + b'"'))
    done, _, _ = world.settle(record, Completed(entries=[JournalItem(index=0, entry=big)]))
    assert done.status == "completed"
    stored = world.entry(record.id, 0)
    assert isinstance(stored, RunEntry) and stored.name == "s"
    assert stored.failure is not None and stored.failure.code == 413
    assert bytes(stored.value) == b"null"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(Errored(message="boom"), "boom", id="plain"),
        pytest.param(Errored(message="boom", related_index=2, related_name="x"), "boom (journal index 2: x)", id="rel"),
        pytest.param(Errored(message="at index 2", related_index=2, related_name="x"), "at index 2", id="said"),
        pytest.param(Errored(message="boom", stacktrace="T" * 5_000), "boom\n" + "T" * 4_000, id="stack-tail"),
    ],
)
def test_errored_failure_composes_the_visible_message(error: Errored, message: str) -> None:
    """The failure shown for an Errored outcome: its message, the related entry unless the
    message names it, and the last 4000 characters of the stack trace."""
    assert errored_failure(error) == Failure(code=error.code, message=message)
