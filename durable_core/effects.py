"""What a committed transaction asks the shell to do next: send attempts, arm the timer loop,
answer the clients waiting for results. The state machine returns these; it never calls out."""

from __future__ import annotations

from durable_core.records import InvocationRecord

__all__ = ["Effects"]


class Effects:
    """Collected while a transaction runs; carried out by the engine after the commit."""

    __slots__ = ("_launch", "completed", "retry", "wake_at")

    def __init__(self) -> None:
        self._launch: dict[str, InvocationRecord] = {}
        #: Invocations completed in the transaction (wake whoever waits for their result).
        self.completed: list[InvocationRecord] = []
        #: Invocations now backing off: start a new attempt at their ``next_retry_ms``.
        self.retry: list[InvocationRecord] = []
        #: The earliest timer written in the transaction (wake the timer loop if it plans later).
        self.wake_at: int | None = None

    @property
    def launch(self) -> list[InvocationRecord]:
        """Attempts to send: the last committed one per invocation (one transaction may start
        an invocation twice, e.g. a cancelled child resumes its parent, then the parent is
        cancelled too; only the latest attempt is current)."""
        return list(self._launch.values())

    def start(self, record: InvocationRecord) -> None:
        """`record` holds a newly committed attempt that must be sent."""
        self._launch[record.id] = record

    def finished(self, record: InvocationRecord) -> None:
        """`record` completed in this transaction: whatever attempt was queued for it is moot."""
        self._launch.pop(record.id, None)
        self.completed.append(record)

    def back_off(self, record: InvocationRecord) -> None:
        """`record` failed an attempt and waits for its retry."""
        self.retry.append(record)

    def arm(self, due_ms: int) -> None:
        """A timer due at `due_ms` was written."""
        self.wake_at = due_ms if self.wake_at is None else min(self.wake_at, due_ms)
