"""Invocation records and their pure transitions. No I/O: values in, values (or errors) out.

Statuses (Restate's names): ``scheduled`` (a delayed send, not started yet), ``pending`` (queued
behind another exclusive invocation of the same object key), ``running`` (an attempt is in
flight), ``suspended`` (waiting on a timer, call, awakeable or promise: no attempt, no memory),
``backing-off`` (waiting for the next retry), ``paused`` (retries exhausted, a journal mismatch or
an operator's pause; needs a human), ``completed`` (a result or a terminal failure is stored).
"""

from __future__ import annotations

import msgspec

from handlers_sdk.protocol import Failure
from proxy.errors import Conflict, Fenced
from proxy.retry import RetryPolicy

__all__ = [
    "ACTIVE_STATUSES",
    "DeploymentRecord",
    "InvocationRecord",
    "ServiceRecord",
    "check_current",
    "complete",
    "decode_record",
    "encode_record",
    "fail_attempt",
    "pause",
    "start_attempt",
    "suspend",
]

ACTIVE_STATUSES = frozenset({"scheduled", "pending", "running", "suspended", "backing-off", "paused"})


class InvocationRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Everything the proxy knows about one invocation, except its input and journal."""

    id: str
    service: str
    handler: str
    key: str = ""
    status: str = "running"
    created_ms: int
    modified_ms: int
    deployment_id: str = ""
    attempt: int = 0
    token: str = ""
    retry_count: int = 0
    next_retry_ms: int = 0
    last_failure: Failure | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = {}
    random_seed: int = 0
    completed_ms: int = 0
    expires_ms: int = 0
    result: bytes | None = None
    failure: Failure | None = None
    #: The invocation whose call entry this one completes (empty for ingress and sends).
    parent_id: str = ""
    parent_index: int = 0
    #: Journal indexes a suspended invocation waits on (any one completing resumes it).
    waiting_on: list[int] = []
    #: Completions so far; the next completed entry gets seq = completion_seq + 1.
    completion_seq: int = 0
    #: When a scheduled (delayed) invocation starts.
    scheduled_at_ms: int = 0
    #: The handler's kind (``exclusive``, ``shared``, ``workflow`` or empty for services).
    kind: str = ""
    #: True for objects and workflows: the invocation sees its key's state.
    keyed: bool = False
    #: Cancelled by an operator: the next attempt raises a TerminalError in the handler.
    cancelled: bool = False
    #: (due ms, index) of its sleep timers not fired yet, so completion can delete their rows.
    timers: list[tuple[int, int]] = []
    #: (promise name, index) of the promises it waits on, so completion can delete the waiter rows.
    promise_waits: list[tuple[str, int]] = []

    @property
    def is_completed(self) -> bool:
        """True once a result or a terminal failure is stored."""
        return self.status == "completed"


class DeploymentRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A registered handler service endpoint and what its discovery announced."""

    id: str
    uri: str
    mode: str = "ack"
    services: list[str] = []
    created_ms: int = 0


class ServiceRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A service, its type and handlers, and the deployment that serves it (the latest)."""

    name: str
    type: str = "service"
    handlers: dict[str, str] = {}
    deployment_id: str


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {}  # type: ignore[type-arg]


def encode_record(record: msgspec.Struct) -> bytes:
    """Stored form of a record."""
    return _encoder.encode(record)


def decode_record(data: bytes, type_: type[msgspec.Struct]) -> msgspec.Struct:
    """Inverse of `encode_record`."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    result: msgspec.Struct = decoder.decode(data)
    return result


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
