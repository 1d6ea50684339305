"""Pure transitions of one invocation record: start an attempt, suspend, complete, back off, pause,
and what an attempt's result (an `Outcome` or an `AttemptFailure`) makes of the record.

Values in, values (or errors) out; no store access. Statuses are described in `records`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from durable_core.errors import Conflict, Fenced
from durable_core.records import InvocationRecord
from durable_core.retry import RetryPolicy
from handlers_sdk.protocol import (
    Completed,
    Errored,
    Failed,
    Failure,
    JournalItem,
    Outcome,
    RunEntry,
    Suspended,
    encode,
)

__all__ = [
    "AttemptFailure",
    "after_attempt",
    "cap_entries",
    "check_current",
    "complete",
    "errored_failure",
    "fail_attempt",
    "pause",
    "start_attempt",
    "suspend",
]


class AttemptFailure(msgspec.Struct, frozen=True):
    """Why an attempt produced no usable outcome (network, HTTP status, garbage, timeout).

    `pause` marks a failure that another attempt would only repeat (the handler's answer is over
    the proxy's size limit): the invocation is paused at once instead of retried, until an
    operator fixes the cause and resumes it (or kills it).
    """

    failure: Failure
    retry_after_ms: int | None = None
    pause: bool = False


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


def after_attempt(
    current: InvocationRecord,
    result: Outcome | AttemptFailure,
    *,
    now: int,
    next_token: str,
    retention_ms: int,
    policy: RetryPolicy,
    completed: Callable[[int], bool],
) -> InvocationRecord:
    """The record after an attempt's `result`: completed (result or terminal failure), suspended
    (or at once a new attempt with `next_token`, if `completed` says an entry it waits on is
    done), paused (an Errored outcome that asks for it, or an AttemptFailure marked `pause`), or
    backing off / paused once `policy`'s attempts are exhausted."""
    if isinstance(result, Completed):
        return complete(current, now, retention_ms, result=bytes(result.value))
    if isinstance(result, Failed):
        return complete(current, now, retention_ms, failure=result.failure)
    if isinstance(result, Suspended):
        waiting = result.waiting_on
        if not waiting or any(completed(index) for index in waiting):
            return start_attempt(current, next_token, now)
        return suspend(current, waiting, now)
    if isinstance(result, Errored) and result.behavior == "pause":
        return pause(current, errored_failure(result), now)
    if isinstance(result, Errored):
        return fail_attempt(current, errored_failure(result), now, policy, result.retry_after_ms)
    if result.pause:
        return pause(current, result.failure, now, current.retry_count + 1)
    return fail_attempt(current, result.failure, now, policy, result.retry_after_ms)


def cap_entries(entries: list[JournalItem], max_entry_bytes: int) -> list[JournalItem]:
    """Replace any step result over the size limit by a terminal step failure (as an ack would
    be refused with 413, and the SDK fails the step)."""
    capped: list[JournalItem] = []
    for item in entries:
        if len(encode(item)) > max_entry_bytes and isinstance(item.entry, RunEntry):
            message = f"step {item.entry.name!r}: result too large to journal"
            item = JournalItem(
                index=item.index, entry=RunEntry(name=item.entry.name, failure=Failure(code=413, message=message))
            )
        capped.append(item)
    return capped


def errored_failure(result: Errored) -> Failure:
    """The failure an Errored outcome leaves visible on the invocation."""
    message = result.message
    if result.related_index is not None and f"index {result.related_index}" not in message:
        message += f" (journal index {result.related_index}: {result.related_name})"
    if result.stacktrace:
        message += "\n" + result.stacktrace[-4000:]
    return Failure(code=result.code, message=message)
