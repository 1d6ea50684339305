"""Pure transitions of one invocation record: start an attempt, suspend, complete, back off, pause.

Values in, values (or errors) out; no store access. Statuses are described in `records`.
"""

from __future__ import annotations

import msgspec

from durable_core.errors import Conflict, Fenced
from durable_core.records import InvocationRecord
from durable_core.retry import RetryPolicy
from handlers_sdk.protocol import Failure

__all__ = ["check_current", "complete", "fail_attempt", "pause", "start_attempt", "suspend"]


def check_current(record: InvocationRecord, attempt: int, token: str) -> None:
    """Raise Fenced unless (`attempt`, `token`) is the invocation's current running attempt."""
    if record.status != "running" or record.attempt != attempt or record.token != token:
        raise Fenced(
            f"attempt {attempt} of {record.id} is not current "
            f"(status {record.status}, current attempt {record.attempt})"
        )


def start_attempt(record: InvocationRecord, token: str, now_ms: int) -> InvocationRecord:
    """A new attempt: the attempt number grows so every older attempt is fenced."""
    if record.is_completed:
        raise Conflict(f"invocation {record.id} is already completed")
    return msgspec.structs.replace(
        record,
        status="running",
        attempt=record.attempt + 1,
        token=token,
        next_retry_ms=0,
        waiting_on=[],
        modified_ms=now_ms,
    )


def suspend(record: InvocationRecord, waiting_on: list[int], now_ms: int) -> InvocationRecord:
    """No attempt until one of `waiting_on` is completed; the token is cleared (fences the old one)."""
    return msgspec.structs.replace(
        record, status="suspended", token="", waiting_on=sorted(waiting_on), modified_ms=now_ms
    )


def complete(
    record: InvocationRecord,
    now_ms: int,
    retention_ms: int,
    result: bytes | None = None,
    failure: Failure | None = None,
) -> InvocationRecord:
    """Store the final outcome (a JSON result or a terminal failure)."""
    return msgspec.structs.replace(
        record,
        status="completed",
        token="",
        result=result,
        failure=failure,
        completed_ms=now_ms,
        modified_ms=now_ms,
        expires_ms=now_ms + retention_ms,
    )


def fail_attempt(
    record: InvocationRecord, failure: Failure, now_ms: int, policy: RetryPolicy, retry_after_ms: int | None
) -> InvocationRecord:
    """A retryable failure: back off until the next retry, or pause once attempts are exhausted."""
    retry_count = record.retry_count + 1
    if policy.exhausted(retry_count):
        return pause(record, failure, now_ms, retry_count)
    delay_ms = policy.delay_ms(retry_count)
    if retry_after_ms is not None:
        delay_ms = max(delay_ms, retry_after_ms)
    return msgspec.structs.replace(
        record,
        status="backing-off",
        token="",
        retry_count=retry_count,
        next_retry_ms=now_ms + delay_ms,
        last_failure=failure,
        modified_ms=now_ms,
    )


def pause(record: InvocationRecord, failure: Failure, now_ms: int, retry_count: int | None = None) -> InvocationRecord:
    """Stop retrying until someone resumes the invocation; the failure stays visible."""
    return msgspec.structs.replace(
        record,
        status="paused",
        token="",
        retry_count=record.retry_count if retry_count is None else retry_count,
        next_retry_ms=0,
        last_failure=failure,
        modified_ms=now_ms,
    )
