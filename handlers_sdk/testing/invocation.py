"""What a test sees of one invocation run by the `LocalRuntime`, and the errors its result raises.

An `Invocation` is a view: its status, journal and outcome are read from the runtime's store
(what the proxy would have in LMDB) each time they are asked for. What it holds itself is what
the runtime observed of its attempts: how many ran, the step calls and bodies of each, the order
in which its entries were committed, and the injected crash.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar, overload

import msgspec

from durable_core.machine import Machine
from durable_core.memory import MemoryStore
from durable_core.records import InvocationRecord, Status
from durable_core.rows import read_entry
from handlers_sdk.errors import JournalMismatchError, TerminalError
from handlers_sdk.protocol import (
    Completed,
    Entry,
    Errored,
    Failed,
    Failure,
    JournalItem,
    Outcome,
    Suspended,
    decode_item,
)
from handlers_sdk.replay import describe
from handlers_sdk.serde import from_json
from handlers_sdk.testing.steps import StepCall, StepExecution, StepRecorder

__all__ = [
    "AttemptFailedError",
    "Invocation",
    "InvocationPausedError",
    "InvocationSuspendedError",
]

T = TypeVar("T")
#: "Not passed" for the deprecated ``type_=`` keyword.
_UNSET: Any = object()


class InvocationPausedError(Exception):
    """The invocation paused: a journal mismatch, or a retryable error with no retries left."""

    def __init__(self, outcome: Errored) -> None:
        detail = f"\n{outcome.stacktrace}" if outcome.stacktrace else ""
        super().__init__(f"invocation paused: {outcome.message}{detail}")
        self.outcome = outcome


class InvocationSuspendedError(Exception):
    """The invocation waits on entries that nothing completes (e.g. an unresolved awakeable), or for
    its key, held by an invocation that has not completed (status ``"pending"``)."""

    def __init__(self, invocation: Invocation) -> None:
        status = invocation.status
        place = invocation.queue_position if status == "pending" else None
        if place is not None:
            message = f"invocation {invocation.id} is pending: number {place} in line for a concurrency limit's slot"
        elif status == "pending":
            message = (
                f"invocation {invocation.id} is pending: {invocation.service} key {invocation.key!r} is held by "
                "an invocation that has not completed"
            )
        elif status == "suspended":
            journal = invocation.journal
            waits = ", ".join(f"{i}: {describe(journal[i])}" if i in journal else str(i) for i in invocation.waiting_on)
            message = f"invocation {invocation.id} is suspended, waiting on [{waits}]"
        else:
            message = f"invocation {invocation.id} is {status}: await rt.resume(inv) to run what is ready"
        super().__init__(message)
        self.invocation = invocation


class AttemptFailedError(Exception):
    """The runtime itself cannot go on (too many attempts, an entry index reused with other content)."""


class Invocation:
    """One invocation of a `LocalRuntime`: a view of its stored record and journal, plus what the
    runtime observed of its attempts (see the module docstring).

    Args:
        store: the runtime's store.
        machine: the runtime's machine (its reads).
        invocation_id: the invocation (created already).
        crash_at: crash injection: the commit at this position of `commit_log` is dropped and its
            attempt dies.
    """

    def __init__(self, store: MemoryStore, machine: Machine, invocation_id: str, crash_at: int | None = None) -> None:
        self._store = store
        self._machine = machine
        with store.read() as txn:
            record = machine.get(txn, invocation_id)
            #: The input the invocation was created with (JSON).
            self.input: bytes = machine.input(txn, invocation_id)
        self.id = invocation_id
        self.service = record.service
        self.handler = record.handler
        self.key = record.key
        self.random_seed = record.random_seed
        self.headers: dict[str, str] = dict(record.headers)
        #: Attempts sent to the handler (an attempt the machine started and superseded before it
        #: was sent, e.g. by a kill, does not count).
        self.attempts = 0
        #: Attempts started by a retry after a failed one.
        self.retries = 0
        #: Journal indexes of the entries the handler created, in the order they were committed.
        self.commit_log: list[int] = []
        #: Ids of the invocations started by this one's one-way sends, in order (a send of a
        #: workflow run that already happened starts none).
        self.sends: list[str] = []
        self.crash_at = crash_at
        #: The attempt killed by the injected crash, and the journal indexes committed at that time.
        self.crashed_attempt = 0
        self.journal_at_crash: frozenset[int] = frozenset()
        #: The step calls and bodies of every attempt.
        self.steps = StepRecorder(self.is_journaled)
        # What the last settled attempt produced: the outcome of a suspension or a pause.
        self._last: Outcome | None = None

    def __repr__(self) -> str:
        return f"<Invocation {self.id} {self.service}/{self.handler} {self.status}>"

    # -- read from the store ----------------------------------------------------------------------

    @property
    def record(self) -> InvocationRecord:
        """The stored record (status, attempt, failure...), as the proxy keeps it."""
        with self._store.read() as txn:
            return self._machine.get(txn, self.id)

    @property
    def status(self) -> Status:
        """Where the invocation is in its life (`durable_core.records.Status`)."""
        return self.record.status

    @property
    def queue_position(self) -> int | None:
        """Its place in line (1: next) while it waits for a concurrency limit's slot, else None."""
        with self._store.read() as txn:
            return self._machine.queue_position(txn, self._machine.get(txn, self.id))

    @property
    def is_done(self) -> bool:
        """True once the invocation completed (with a result or a terminal failure)."""
        return self.status == "completed"

    @property
    def keyed(self) -> bool:
        """True for invocations of virtual objects and workflows."""
        return self.record.keyed

    @property
    def cancelled(self) -> bool:
        """Cancelled (`LocalRuntime.cancel`): its attempts tell the handler, as the proxy's do."""
        return self.record.cancelled

    @property
    def waiting_on(self) -> list[int]:
        """Indexes the handler waits on while `status` is ``"suspended"``."""
        return list(self.record.waiting_on)

    @property
    def journal_items(self) -> list[JournalItem]:
        """The stored journal in wire form, ordered by index."""
        with self._store.read() as txn:
            rows = self._machine.journal(txn, self.id)
        return [decode_item(row) for row in rows]

    @property
    def journal(self) -> dict[int, Entry]:
        """The stored journal by index (a copy: what the proxy would have in LMDB)."""
        return {item.index: item.entry for item in self.journal_items}

    @property
    def outcome(self) -> Outcome | None:
        """How the invocation ended (Completed or Failed), or the attempt outcome it stopped at
        (Suspended, or Errored when paused); None while it is pending, scheduled or running."""
        record = self.record
        if record.status == "completed":
            if record.failure is not None:
                return Failed(failure=record.failure)
            return Completed(value=msgspec.Raw(record.result if record.result is not None else b"null"))
        if record.status == "paused":
            if isinstance(self._last, Errored):
                return self._last
            failure = record.last_failure or Failure(code=500, message="paused")
            return Errored(code=failure.code, message=failure.message, behavior="pause")
        if record.status == "suspended" and isinstance(self._last, Suspended):
            return self._last
        return None

    # -- observed by the runtime ----------------------------------------------------------------

    @property
    def calls(self) -> list[StepCall]:
        """Every ``ctx.run`` call of every attempt, replayed or new."""
        return self.steps.calls

    @property
    def executions(self) -> list[StepExecution]:
        """Every step body that ran (each one a side effect)."""
        return self.steps.executions

    def body_counts(self) -> dict[int, int]:
        """How many times the body of the step at each journal index ran."""
        counts: dict[int, int] = {}
        for execution in self.steps.executions:
            counts[execution.index] = counts.get(execution.index, 0) + 1
        return counts

    @overload
    def result(self) -> Any: ...

    @overload
    def result(self, type_hint: type[T]) -> T: ...

    @overload
    def result(self, *, type_: Any) -> Any: ...

    def result(self, type_hint: Any = Any, *, type_: Any = _UNSET) -> Any:
        """The handler's return value, decoded into `type_hint` (``type_=`` is its deprecated spelling).

        Raises:
            TerminalError: the invocation failed terminally.
            JournalMismatchError: it paused on a journal mismatch.
            InvocationPausedError: it paused after a retryable error (see the stack trace).
            InvocationSuspendedError: it waits on something nothing will complete, or for its key.
        """
        if type_ is not _UNSET:
            warnings.warn("type_= is deprecated, use type_hint= instead", DeprecationWarning, stacklevel=2)
            type_hint = type_
        outcome = self.outcome
        if isinstance(outcome, Completed):
            return from_json(outcome.value, type_hint)
        if isinstance(outcome, Failed):
            raise TerminalError(outcome.failure.message, outcome.failure.code)
        if isinstance(outcome, Errored):
            if outcome.behavior == "pause" and outcome.related_index is not None:
                raise JournalMismatchError(outcome.related_index, *_mismatch_parts(outcome.message))
            raise InvocationPausedError(outcome)
        raise InvocationSuspendedError(self)

    def settled(self, outcome: Outcome) -> None:
        """The machine settled an attempt of this invocation with `outcome` (as it applied it)."""
        self._last = outcome

    def crashed(self, attempt: int) -> None:
        """The injected crash killed `attempt` (the runtime's count) before its next commit."""
        self.crashed_attempt = attempt
        with self._store.read() as txn:
            rows = self._machine.journal(txn, self.id)
        self.journal_at_crash = frozenset(decode_item(row).index for row in rows)

    @property
    def crash_pending(self) -> bool:
        """True while the injected crash has yet to happen."""
        return self.crash_at is not None and not self.crashed_attempt

    def is_journaled(self, index: int) -> bool:
        """True if the journal holds an entry at `index`."""
        with self._store.read() as txn:
            return read_entry(txn, self.id, index) is not None


def _mismatch_parts(message: str) -> tuple[str, str]:
    """(recorded, attempted) back out of a JournalMismatchError message."""
    _, _, rest = message.partition(": recorded ")
    recorded, _, attempted = rest.partition(", replay attempted ")
    return recorded or message, attempted
