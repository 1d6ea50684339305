"""The read use cases of the state machine: invocations, journals, state, listings and counts.

Pure functions of a `ReadTxn` (a snapshot of any backend), grouped in `Queries`, which `Machine`
extends: the proxy's API and the toolkit read through the same code the rules write with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from durable_core.errors import BadRequest, NotFound
from durable_core.keyed import object_hash, read_promises, read_state, read_state_keys
from durable_core.records import (
    DeploymentRecord,
    InvocationRecord,
    PromiseRecord,
    ServiceRecord,
    Status,
    decode_record,
)
from durable_core.rows import journal_rows, read_input, read_record
from durable_core.txn import ReadTxn

__all__ = ["Queries"]


class Queries:
    """Reads over a `ReadTxn`; no state of their own."""

    def get(self, txn: ReadTxn, invocation_id: str) -> InvocationRecord:
        """The stored record of an invocation, or NotFound."""
        record = read_record(txn, invocation_id)
        if record is None:
            raise NotFound(f"invocation '{invocation_id}' not found")
        return record

    def journal(self, txn: ReadTxn, invocation_id: str) -> list[bytes]:
        """The stored journal of an invocation (JSON `JournalItem`s), in index order."""
        return journal_rows(txn, invocation_id)

    def input(self, txn: ReadTxn, invocation_id: str) -> bytes:
        """The input an invocation was created with (JSON)."""
        return read_input(txn, invocation_id)

    def state(self, txn: ReadTxn, service: str, key: str) -> dict[str, bytes]:
        """The state of an object or workflow key: name -> JSON value."""
        return read_state(txn, service, key)

    def keys_with_state(self, txn: ReadTxn, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """At most `limit` (service, key) pairs of object and workflow keys with state, and whether
        there were more (the SQL introspection reads at most this many)."""
        return read_state_keys(txn, limit)

    def promises(self, txn: ReadTxn, workflow: str, key: str) -> list[PromiseRecord]:
        """The durable promises of a workflow key that have been resolved or rejected."""
        return read_promises(txn, workflow, key)

    def workflow_run(self, txn: ReadTxn, workflow: str, key: str) -> str | None:
        """The invocation id of a workflow key's run, if it has one."""
        found = txn.get("workflows", object_hash(workflow, key))
        return None if found is None else found.decode("ascii")

    def active(self, txn: ReadTxn, only: Callable[[str], bool] | None = None) -> Iterator[InvocationRecord]:
        """Every invocation that has not completed, in id order, one at a time (there may be
        many: callers that only count or filter must not hold them all).

        Args:
            only: just the ids this says yes to (their records are not even read otherwise).
        """
        for key, _ in txn.items_from("active", b""):
            if only is not None and not only(key.decode("ascii")):
                continue
            data = txn.get("invocations", key)
            if data is not None:
                yield decode_record(data, InvocationRecord)

    def list_invocations(
        self,
        txn: ReadTxn,
        *,
        status: Status | str | None = None,
        service: str | None = None,
        handler: str | None = None,
        limit: int = 50,
        after: str | None = None,
        before: str | None = None,
        order: str = "asc",
    ) -> tuple[list[InvocationRecord], str | None]:
        """A page of invocations in id (creation) order, filtered; returns it and the cursor of
        the next page (the last id on this one, None when nothing more matches).

        `order` ``"asc"`` lists oldest first, from the first id after `after`; ``"desc"`` lists
        newest first, from the last id before `before`. A status other than completed is read
        from the small index of active invocations, in either order.

        Raises:
            BadRequest: an unknown order, a cursor of the other order, or a cursor that cannot
                be an invocation id.
        """
        if order not in ("asc", "desc"):
            raise BadRequest(f"unknown order '{order}': use asc (oldest first) or desc (newest first)")
        if order == "asc" and before:
            raise BadRequest("the before cursor pages newest first: use it with order=desc")
        if order == "desc" and after:
            raise BadRequest("the after cursor pages oldest first: use it with order=asc")
        db = "active" if status is not None and status != "completed" else "invocations"
        found: list[InvocationRecord] = []
        if order == "desc":
            keys = txn.items_before(db, _cursor_key(before) if before else None)
        else:
            keys = txn.items_from(db, _cursor_key(after) + b"\x00" if after else b"")
        for key, _ in keys:
            data = txn.get("invocations", key)
            if data is None:
                continue
            record = decode_record(data, InvocationRecord)
            if status is not None and record.status != status:
                continue
            if service is not None and record.service != service:
                continue
            if handler is not None and record.handler != handler:
                continue
            if len(found) == limit:
                return found, found[-1].id
            found.append(record)
        return found, None

    def recent_invocations(self, txn: ReadTxn, limit: int) -> tuple[list[InvocationRecord], bool]:
        """The newest `limit` invocations, newest first (ids sort by creation), and whether there are
        more (the SQL introspection reads at most this many)."""
        found: list[InvocationRecord] = []
        for _, data in txn.items_before("invocations", None):
            if len(found) == limit:
                return found, True
            found.append(decode_record(data, InvocationRecord))
        return found, False

    def status_counts(self, txn: ReadTxn) -> dict[str, int]:
        """How many invocations are in each status."""
        counts: dict[str, int] = {}
        active = 0
        for record in self.active(txn):
            counts[record.status] = counts.get(record.status, 0) + 1
            active += 1
        counts["completed"] = txn.count("invocations") - active
        return counts

    def deployments(self, txn: ReadTxn) -> list[DeploymentRecord]:
        """Every registered deployment."""
        return [decode_record(value, DeploymentRecord) for _, value in txn.items_from("deployments", b"")]

    def services(self, txn: ReadTxn) -> list[ServiceRecord]:
        """Every registered service."""
        return [decode_record(value, ServiceRecord) for _, value in txn.items_from("services", b"")]


def _cursor_key(cursor: str) -> bytes:
    """The key of a paging cursor (an invocation id), or BadRequest."""
    try:
        return cursor.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest(f"'{cursor}' is not an invocation id") from None
