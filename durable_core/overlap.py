"""Invocations held behind another one: a schedule's ``queue`` overlap policy.

A fire of a schedule whose previous fire's invocation has not completed is created ``pending``
and held behind it (``held``: holder id -> held id). The transaction that completes the holder
admits the held invocation (`release`), which holds the next fire in turn, so fires run one after
the other, in fire order, each once. Nothing here knows schedules: only who waits for whom.
"""

from __future__ import annotations

import msgspec

from durable_core.effects import Effects
from durable_core.flow import announce
from durable_core.keyed import admit
from durable_core.keys import invocation_key
from durable_core.records import InvocationRecord, ServiceLimits
from durable_core.rows import put_record, read_record, touch
from durable_core.txn import Txn

__all__ = ["SCHEDULE_HEADER", "hold", "release"]

#: Header of every schedule fire's invocation (its schedule's id): only fires hold others behind them.
SCHEDULE_HEADER = "x-durable-schedule"


def hold(txn: Txn, record: InvocationRecord, behind: str, now: int) -> InvocationRecord:
    """`record`, pending behind the invocation `behind` (its rows are the caller's to write)."""
    # Held because `behind` has not completed: write its record, so that its completion racing
    # this (which finds nothing held yet) conflicts with it (`rows.touch`).
    touch(txn, "invocations", invocation_key(behind))
    txn.put("held", behind.encode("ascii"), record.id.encode("ascii"))
    return msgspec.structs.replace(record, status="pending", token="", modified_ms=now)


def release(
    txn: Txn, record: InvocationRecord, now: int, token: str, effects: Effects, limits: ServiceLimits | None = None
) -> None:
    """The completed `record` admits the invocation held behind it, if any, as `keyed.admit` does
    any invocation (an exclusive handler still waits for its key's lock, and every invocation for
    its service's `limits`)."""
    if SCHEDULE_HEADER not in record.headers:
        return  # only a schedule's fire is ever a holder: no store read for every other completion
    holder = record.id.encode("ascii")
    held_id = txn.get("held", holder)
    if held_id is None:
        return
    txn.delete("held", holder)
    held = read_record(txn, held_id.decode("ascii"))
    if held is None or held.status != "pending":
        return
    admitted = admit(txn, held, now, token, limits)
    put_record(txn, admitted)
    announce(admitted, effects)
