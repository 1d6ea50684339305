"""Operator actions on invocations, inside a write transaction: cancel, kill, pause, resume, purge.

* **cancel** is cooperative: the invocation's next attempt raises a TerminalError (409) in the
  handler at its first new operation, so compensation code runs; uncompleted children are
  cancelled too. One that never started is completed as cancelled at once.
* **kill** stops now: the invocation completes with a 409 failure and no handler code runs
  again; its uncompleted children are killed too.
* **pause** stops retrying (the in-flight attempt is fenced); **resume** starts a new attempt,
  optionally on the latest deployment of the service.
* **purge** removes a completed invocation: record, input, journal, idempotency key, and for a
  workflow run its state and promises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import msgspec

from durable_core.effects import Effects
from durable_core.errors import Conflict, NotFound
from durable_core.flow import LimitsOf, no_limits
from durable_core.journal import finish, new_token
from durable_core.keyed import clear_state, object_hash
from durable_core.keys import expiry_key, idempotency_key, invocation_key, journal_prefix
from durable_core.lifecycle import complete, pause, start_attempt
from durable_core.pins import pin, unpin
from durable_core.records import InvocationRecord, Status
from durable_core.rows import journal_items, put_record, read_record
from durable_core.txn import Txn
from handlers_sdk.protocol import CallEntry, Failure

__all__ = ["cancel", "kill", "pause_invocation", "purge", "resume"]

_Action = Callable[[Txn, str, int, int, Effects, LimitsOf], InvocationRecord]
_NOT_STARTED: frozenset[Status] = frozenset({"pending", "scheduled"})


def _get(txn: Txn, invocation_id: str) -> InvocationRecord:
    record = read_record(txn, invocation_id)
    if record is None:
        raise NotFound(f"invocation '{invocation_id}' not found")
    return record


def _open_children(txn: Txn, invocation_id: str) -> list[str]:
    """Ids of the children this invocation called and still waits for."""
    return [
        item.entry.invocation_id
        for item in journal_items(txn, invocation_id)
        if isinstance(item.entry, CallEntry) and not item.entry.completed
    ]


def _open(
    txn: Txn, invocation_id: str, now: int, retention_ms: int, effects: Effects, action: _Action, limits_of: LimitsOf
) -> InvocationRecord:
    """The record of a not yet completed invocation, after applying `action` to its open children.

    Raises:
        NotFound: unknown invocation.
        Conflict: it has already completed.
    """
    record = _get(txn, invocation_id)
    if record.is_completed:
        raise Conflict(f"invocation {invocation_id} has already completed")
    for child in _open_children(txn, invocation_id):
        with contextlib.suppress(NotFound, Conflict):
            action(txn, child, now, retention_ms, effects, limits_of)
    # A child that completed just now completed its call entry here too: read the record again.
    return _get(txn, invocation_id)


def cancel(
    txn: Txn, invocation_id: str, now: int, retention_ms: int, effects: Effects, limits_of: LimitsOf = no_limits
) -> InvocationRecord:
    """Cancel an invocation and its open children (see the module docstring); one that never
    started frees its place in a limit's queue (or its slots) with `limits_of`.

    Raises:
        NotFound: unknown invocation.
        Conflict: it has already completed.
    """
    record = _open(txn, invocation_id, now, retention_ms, effects, cancel, limits_of)
    if record.status in _NOT_STARTED:
        done = complete(record, now, retention_ms, failure=Failure(code=409, message="invocation cancelled"))
        finish(txn, done, now, effects, limits_of)
        return done
    record = start_attempt(msgspec.structs.replace(record, cancelled=True, retry_count=0), new_token(), now)
    put_record(txn, record)
    effects.start(record)
    return record


def kill(
    txn: Txn, invocation_id: str, now: int, retention_ms: int, effects: Effects, limits_of: LimitsOf = no_limits
) -> InvocationRecord:
    """Complete an invocation at once with a 409 failure; its open children are killed too (their
    concurrency slots are freed with `limits_of`).

    Raises:
        NotFound: unknown invocation.
        Conflict: it has already completed.
    """
    record = _open(txn, invocation_id, now, retention_ms, effects, kill, limits_of)
    done = complete(record, now, retention_ms, failure=Failure(code=409, message="invocation killed"))
    finish(txn, done, now, effects, limits_of)
    return done


def pause_invocation(txn: Txn, invocation_id: str, now: int) -> InvocationRecord:
    """Stop retrying an invocation until it is resumed (its in-flight attempt is fenced).

    Raises:
        NotFound: unknown invocation.
        Conflict: it is completed, not started yet, or already paused.
    """
    record = _get(txn, invocation_id)
    if record.status not in ("running", "backing-off", "suspended"):
        raise Conflict(f"invocation {invocation_id} is {record.status}: only running, backing-off or "
                       "suspended invocations can be paused")  # fmt: skip
    failure = record.last_failure or Failure(code=0, message="paused by an operator")
    record = pause(record, failure, now)
    put_record(txn, record)
    return record


def resume(txn: Txn, invocation_id: str, now: int, deployment_id: str, effects: Effects) -> InvocationRecord:
    """Start a new attempt of a paused (or backing-off) invocation, on `deployment_id` if given.

    Raises:
        NotFound: unknown invocation.
        Conflict: it is not paused or backing off.
    """
    record = _get(txn, invocation_id)
    if record.status not in ("paused", "backing-off"):
        raise Conflict(f"invocation {invocation_id} is {record.status}: only paused or backing-off "
                       "invocations can be resumed")  # fmt: skip
    if deployment_id and deployment_id != record.deployment_id:
        unpin(txn, record)  # it moves: pinned to the deployment it resumes on
        record = msgspec.structs.replace(record, deployment_id=deployment_id)
        pin(txn, record)
    record = msgspec.structs.replace(record, retry_count=0)
    record = start_attempt(record, new_token(), now)
    put_record(txn, record)
    effects.start(record)
    return record


def purge(txn: Txn, invocation_id: str) -> None:
    """Remove every trace of a completed invocation.

    Raises:
        NotFound: unknown invocation.
        Conflict: it has not completed.
    """
    record = _get(txn, invocation_id)
    if not record.is_completed:
        raise Conflict(f"invocation {invocation_id} is {record.status}: only completed ones can be purged")
    key = invocation_key(invocation_id)
    txn.delete("invocations", key)
    txn.delete("inputs", key)
    txn.delete("active", key)
    txn.delete("expiry", expiry_key(record.expires_ms, invocation_id))
    txn.delete_prefix("journal", journal_prefix(invocation_id))
    if record.idempotency_key is not None:
        idem = idempotency_key(record.service, record.handler, record.key, record.idempotency_key)
        if txn.get("idempotency", idem) == key:
            txn.delete("idempotency", idem)
    if record.kind == "workflow":
        workflow = object_hash(record.service, record.key)
        if txn.get("workflows", workflow) == key:
            txn.delete("workflows", workflow)
            clear_state(txn, record.service, record.key)
            txn.delete_prefix("promises", workflow)
            txn.delete_prefix("promise_waiters", workflow)
