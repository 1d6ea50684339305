"""The index of invocations pinned to a deployment: ``pinned`` holds one row per invocation that
has not completed, under the deployment its journal is being written by.

Kept in the same transaction as every change of an invocation's record that matters to it
(created, moved to another deployment by a resume, completed, purged), so that counting what
is pinned to one deployment reads that deployment's rows only, never every invocation.
"""

from __future__ import annotations

from durable_core.records import InvocationRecord, decode_record
from durable_core.txn import ReadTxn, Txn

__all__ = ["build_index", "index_missing", "pin", "pinned_ids", "pinned_records", "unpin"]

#: Meta row: set once the index covers every active invocation (stores older than it are indexed
#: once by `build_index`).
_BUILT_ROW = b"pinned_index"


def _prefix(deployment_id: str) -> bytes:
    return deployment_id.encode("utf-8", "surrogatepass") + b"\x00"


def _key(deployment_id: str, invocation_id: str) -> bytes:
    return _prefix(deployment_id) + invocation_id.encode("ascii")


def pin(txn: Txn, record: InvocationRecord) -> None:
    """`record` (not completed) is pinned to its deployment."""
    if record.deployment_id:
        txn.put("pinned", _key(record.deployment_id, record.id), b"")


def unpin(txn: Txn, record: InvocationRecord) -> None:
    """`record` is no longer pinned to its deployment (completed, purged or moved)."""
    if record.deployment_id:
        txn.delete("pinned", _key(record.deployment_id, record.id))


def pinned_ids(txn: ReadTxn, deployment_id: str) -> list[str]:
    """Ids of the invocations not completed that are pinned to `deployment_id`, in id order."""
    prefix = _prefix(deployment_id)
    return [key[len(prefix) :].decode("ascii") for key, _ in txn.items_with_prefix("pinned", prefix)]


def pinned_records(txn: ReadTxn, deployment_id: str) -> list[InvocationRecord]:
    """The records of `pinned_ids` (a stale row, whose record completed or moved, is skipped)."""
    found: list[InvocationRecord] = []
    for invocation_id in pinned_ids(txn, deployment_id):
        data = txn.get("invocations", invocation_id.encode("ascii"))
        if data is None:
            continue
        record = decode_record(data, InvocationRecord)
        if not record.is_completed and record.deployment_id == deployment_id:
            found.append(record)
    return found


def index_missing(txn: ReadTxn) -> bool:
    """Whether `build_index` has work to do: the store has active invocations and no index yet.

    A store with nothing active needs no index built (every invocation created from now on is
    pinned as it is written), so a start reads this first and commits nothing in the common case.
    """
    if txn.get("meta", _BUILT_ROW) is not None:
        return False
    return next(iter(txn.items_from("active", b"")), None) is not None


def build_index(txn: Txn) -> int:
    """Index every active invocation once (a store written before the index existed); returns
    how many rows it wrote (0 when the index was built already)."""
    if txn.get("meta", _BUILT_ROW) is not None:
        return 0
    records = [decode_record(data, InvocationRecord) for key, _ in txn.items_from("active", b"")
               if (data := txn.get("invocations", key)) is not None]  # fmt: skip
    for record in records:
        if not record.is_completed:
            pin(txn, record)
    txn.put("meta", _BUILT_ROW, b"1")
    return len(records)
