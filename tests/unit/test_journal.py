"""durable_core.records and durable_core.lifecycle: invocation records and their pure transitions."""

from __future__ import annotations

import random

import msgspec
import pytest

from durable_core.errors import Conflict, Fenced
from durable_core.lifecycle import check_current, complete, fail_attempt, pause, start_attempt, suspend
from durable_core.records import (
    ACTIVE_STATUSES,
    DeploymentRecord,
    InvocationRecord,
    ServiceRecord,
    decode_record,
    encode_record,
)
from durable_core.retry import RetryPolicy
from handlers_sdk.protocol import Failure

NOW = 1_700_000_000_000
BOOM = Failure(code=503, message="handler unreachable")


def running(**overrides: object) -> InvocationRecord:
    fields: dict[str, object] = {
        "id": "inv_1",
        "service": "Svc",
        "handler": "h",
        "created_ms": NOW - 1000,
        "modified_ms": NOW - 1000,
        "attempt": 1,
        "token": "tok-1",
    }
    fields.update(overrides)
    return InvocationRecord(**fields)  # type: ignore[arg-type]


def no_jitter(initial_ms: int = 500, factor: float = 2.0, max_ms: int = 60_000, max_attempts: int = 70) -> RetryPolicy:
    return RetryPolicy(initial_ms, factor, max_ms, max_attempts, jitter=0.0, rng=random.Random(0))


# -- codec ------------------------------------------------------------------------------------


def test_invocation_record_round_trip() -> None:
    record = running(
        key="k",
        idempotency_key="idem",
        headers={"x-a": "1"},
        last_failure=BOOM,
        result=b'{"ok":true}',
        random_seed=2**62,
    )
    assert decode_record(encode_record(record), InvocationRecord) == record


@pytest.mark.parametrize(
    "record",
    [
        DeploymentRecord(id="dp_1", uri="http://h", mode="suspend", services=["A", "B"], created_ms=NOW),
        ServiceRecord(name="A", type="object", handlers={"get": "shared"}, deployment_id="dp_1"),
    ],
)
def test_other_records_round_trip(record: msgspec.Struct) -> None:
    assert decode_record(encode_record(record), type(record)) == record


def test_decode_rejects_another_type() -> None:
    data = encode_record(DeploymentRecord(id="dp_1", uri="http://h"))
    with pytest.raises(msgspec.ValidationError):
        decode_record(data, InvocationRecord)


def test_active_statuses() -> None:
    # Every status but "completed" keeps an invocation in the `active` index.
    assert {"running", "backing-off", "paused", "suspended", "scheduled"} <= ACTIVE_STATUSES
    assert "completed" not in ACTIVE_STATUSES


# -- fencing ----------------------------------------------------------------------------------


def test_current_attempt_passes() -> None:
    check_current(running(), 1, "tok-1")


@pytest.mark.parametrize(
    ("record", "attempt", "token"),
    [
        (running(), 1, "tok-other"),
        (running(), 2, "tok-1"),
        (running(), 0, "tok-1"),
        (running(status="backing-off"), 1, "tok-1"),
        (running(status="paused"), 1, "tok-1"),
        (running(status="completed"), 1, "tok-1"),
        (running(token=""), 1, ""),
    ],
)
def test_stale_or_foreign_attempts_are_fenced(record: InvocationRecord, attempt: int, token: str) -> None:
    if record.token == "" and token == "":
        record = msgspec.structs.replace(record, status="completed")
    with pytest.raises(Fenced) as info:
        check_current(record, attempt, token)
    assert info.value.status == 409
    assert isinstance(info.value, Conflict)
    assert record.id in info.value.message


# -- transitions ------------------------------------------------------------------------------


def test_start_attempt_fences_every_older_attempt() -> None:
    before = running(status="backing-off", attempt=3, token="", next_retry_ms=NOW + 10)
    after = start_attempt(before, "tok-4", NOW)
    assert (after.status, after.attempt, after.token, after.next_retry_ms, after.modified_ms) == (
        "running", 4, "tok-4", 0, NOW,
    )  # fmt: skip
    check_current(after, 4, "tok-4")
    with pytest.raises(Fenced):
        check_current(after, 3, "tok-4")
    # Records are values: the input is unchanged.
    assert before.attempt == 3 and before.status == "backing-off"


def test_start_attempt_keeps_the_identity_and_history() -> None:
    before = running(retry_count=2, last_failure=BOOM, idempotency_key="i", random_seed=9)
    after = start_attempt(before, "t", NOW)
    for field in ("id", "service", "handler", "key", "created_ms", "retry_count", "last_failure",
                  "idempotency_key", "random_seed"):  # fmt: skip
        assert getattr(after, field) == getattr(before, field), field


def test_start_attempt_of_a_completed_invocation_is_a_conflict() -> None:
    done = complete(running(), NOW, 1000, result=b"1")
    with pytest.raises(Conflict) as info:
        start_attempt(done, "t", NOW)
    assert not isinstance(info.value, Fenced)


def test_complete_with_result() -> None:
    done = complete(running(), NOW, retention_ms=5_000, result=b'"hi"')
    assert done.is_completed and done.status == "completed"
    assert (done.result, done.failure, done.token) == (b'"hi"', None, "")
    assert (done.completed_ms, done.modified_ms, done.expires_ms) == (NOW, NOW, NOW + 5_000)
    with pytest.raises(Fenced):
        check_current(done, 1, "tok-1")


def test_complete_with_failure() -> None:
    failure = Failure(code=422, message="nope")
    done = complete(running(), NOW, retention_ms=0, failure=failure)
    assert done.is_completed and done.failure == failure and done.result is None


def test_fail_attempt_backs_off() -> None:
    policy = no_jitter(initial_ms=100, factor=2.0, max_ms=10_000, max_attempts=5)
    once = fail_attempt(running(), BOOM, NOW, policy, retry_after_ms=None)
    assert (once.status, once.retry_count, once.next_retry_ms, once.token) == ("backing-off", 1, NOW + 100, "")
    assert once.last_failure == BOOM and once.modified_ms == NOW
    twice = fail_attempt(start_attempt(once, "t2", NOW), BOOM, NOW, policy, None)
    assert (twice.retry_count, twice.next_retry_ms) == (2, NOW + 200)


def test_fail_attempt_honours_a_longer_retry_after() -> None:
    policy = no_jitter(initial_ms=100, max_attempts=5)
    record = fail_attempt(running(), BOOM, NOW, policy, retry_after_ms=30_000)
    assert record.next_retry_ms == NOW + 30_000


def test_fail_attempt_ignores_a_shorter_retry_after() -> None:
    policy = no_jitter(initial_ms=100, max_attempts=5)
    record = fail_attempt(running(), BOOM, NOW, policy, retry_after_ms=0)
    assert record.next_retry_ms == NOW + 100


def test_fail_attempt_pauses_when_exhausted() -> None:
    policy = no_jitter(initial_ms=100, max_attempts=3)
    record = running(retry_count=2)
    paused = fail_attempt(record, BOOM, NOW, policy, retry_after_ms=None)
    assert (paused.status, paused.retry_count, paused.next_retry_ms, paused.token) == ("paused", 3, 0, "")
    assert paused.last_failure == BOOM
    assert not paused.is_completed


def test_pause_keeps_the_retry_count_by_default() -> None:
    mismatch = Failure(code=570, message="journal mismatch")
    paused = pause(running(retry_count=4), mismatch, NOW)
    assert (paused.status, paused.retry_count, paused.last_failure) == ("paused", 4, mismatch)
    with pytest.raises(Fenced):
        check_current(paused, 1, "tok-1")


def test_suspend_clears_the_token_and_records_what_it_waits_on() -> None:
    suspended = suspend(running(), [5, 2], NOW)
    assert (suspended.status, suspended.token, suspended.waiting_on) == ("suspended", "", [2, 5])
    with pytest.raises(Fenced):
        check_current(suspended, 1, "tok-1")
    resumed = start_attempt(suspended, "tok-2", NOW + 1)
    assert (resumed.status, resumed.attempt, resumed.waiting_on) == ("running", 2, [])


def test_resume_after_pause_is_a_new_attempt() -> None:
    paused = pause(running(), BOOM, NOW)
    resumed = start_attempt(paused, "tok-2", NOW + 1)
    assert (resumed.status, resumed.attempt) == ("running", 2)
