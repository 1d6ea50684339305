"""What the `LocalRuntime` keeps per invocation, its fake clock, and the errors its results raise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from handlers_sdk.errors import JournalMismatchError, TerminalError
from handlers_sdk.protocol import Completed, Entry, Errored, Failed, JournalItem, Outcome
from handlers_sdk.replay import describe
from handlers_sdk.serde import from_json
from handlers_sdk.testing.steps import StepCall, StepExecution, StepRecorder

__all__ = [
    "AttemptFailedError",
    "Completion",
    "FakeClock",
    "Invocation",
    "InvocationPausedError",
    "InvocationSuspendedError",
    "Status",
]

Status = Literal["running", "completed", "paused", "suspended", "pending"]


class FakeClock:
    """The runtime's wall clock in milliseconds; it only moves when a timer or a retry needs it."""

    def __init__(self, now_ms: int | None = None) -> None:
        self._now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms

    def now_ms(self) -> int:
        """The fake wall clock."""
        return self._now_ms

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        self._now_ms += max(0, int(seconds * 1000))

    def advance_to(self, now_ms: int) -> None:
        """Move the clock forward to `now_ms` (never backwards)."""
        self._now_ms = max(self._now_ms, now_ms)


class InvocationPausedError(Exception):
    """The invocation paused: a journal mismatch, or a retryable error with no retries left."""

    def __init__(self, outcome: Errored) -> None:
        detail = f"\n{outcome.stacktrace}" if outcome.stacktrace else ""
        super().__init__(f"invocation paused: {outcome.message}{detail}")
        self.outcome = outcome


class InvocationSuspendedError(Exception):
    """The invocation waits on entries that no completer can complete (e.g. an unresolved awakeable),
    or for its key, held by an invocation that has not completed (status ``"pending"``)."""

    def __init__(self, invocation: Invocation) -> None:
        waits = ", ".join(
            f"{i}: {describe(invocation.journal[i])}" if i in invocation.journal else str(i)
            for i in invocation.waiting_on
        )
        if invocation.status == "pending":
            message = (
                f"invocation {invocation.id} is pending: {invocation.service} key {invocation.key!r} is held by "
                "an invocation that has not completed"
            )
        else:
            message = f"invocation {invocation.id} is suspended, waiting on [{waits}]"
        super().__init__(message)
        self.invocation = invocation


class AttemptFailedError(Exception):
    """The runtime itself cannot go on (too many attempts, an entry index reused with other content)."""


@dataclass(frozen=True)
class Completion:
    """What a completer decided: the completed entry, and when (fake clock) it completes.

    The runtime fills in the entry's ``seq`` (completion order) if it has one.
    """

    entry: Entry
    #: Fake-clock milliseconds at which the completion happens; None means "now".
    at_ms: int | None = None


@dataclass(eq=False)
class Invocation:
    """One invocation run by the `LocalRuntime`: its journal, attempts, steps and outcome."""

    id: str
    service: str
    handler: str
    key: str
    input: bytes
    random_seed: int
    headers: dict[str, str]
    #: Committed entries by index (what the proxy would have in LMDB).
    journal: dict[int, Entry] = field(default_factory=dict)
    status: Status = "running"
    outcome: Outcome | None = None
    attempts: int = 0
    retries: int = 0
    #: Indexes the handler waits on while `status` is "suspended".
    waiting_on: list[int] = field(default_factory=list)
    #: Handler-created entries in the order they were committed.
    commit_log: list[int] = field(default_factory=list)
    #: Ids of the invocations started by this one's one-way sends, in order.
    sends: list[str] = field(default_factory=list)
    #: Cancelled (`LocalRuntime.cancel`): its attempts tell the handler, as the proxy's do.
    cancelled: bool = False
    #: Crash injection: drop the commit at this position of `commit_log` and kill the attempt.
    crash_at: int | None = None
    #: The attempt killed by the injected crash, and the journal indexes committed at that time.
    crashed_attempt: int = 0
    journal_at_crash: frozenset[int] = frozenset()
    steps: StepRecorder = field(init=False)
    _seq: int = 0
    #: (fake clock, real wall clock) at the start of the attempt that created each entry, to turn
    #: the wall-clock deadlines the SDK writes into fake-clock ones (never earlier than asked for).
    _created_at: dict[int, tuple[int, int]] = field(default_factory=dict)
    _attempt_clock: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.steps = StepRecorder(lambda index: index in self.journal)

    @property
    def is_done(self) -> bool:
        """True once the invocation completed (with a result or a terminal failure)."""
        return self.status == "completed"

    @property
    def journal_items(self) -> list[JournalItem]:
        """The journal in wire form, ordered by index."""
        return [JournalItem(index=i, entry=self.journal[i]) for i in sorted(self.journal)]

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

    def result(self, type_: Any = Any) -> Any:
        """The handler's return value, decoded into `type_`.

        Raises:
            TerminalError: the invocation failed terminally.
            JournalMismatchError: it paused on a journal mismatch.
            InvocationPausedError: it paused after a retryable error (see the stack trace).
            InvocationSuspendedError: it waits on something nothing will complete.
        """
        outcome = self.outcome
        if isinstance(outcome, Completed):
            return from_json(outcome.value, type_)
        if isinstance(outcome, Failed):
            raise TerminalError(outcome.failure.message, outcome.failure.code)
        if isinstance(outcome, Errored):
            if outcome.behavior == "pause" and outcome.related_index is not None:
                raise JournalMismatchError(outcome.related_index, *_mismatch_parts(outcome.message))
            raise InvocationPausedError(outcome)
        raise InvocationSuspendedError(self)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _mismatch_parts(message: str) -> tuple[str, str]:
    """(recorded, attempted) back out of a JournalMismatchError message."""
    _, _, rest = message.partition(": recorded ")
    recorded, _, attempted = rest.partition(", replay attempted ")
    return recorded or message, attempted
