"""Errors a handler author sees, and the control-flow signals of the SDK.

Tree::

    Exception
    ├── TerminalError            fails the invocation (or a step) without retry; carries status_code
    ├── RetryableError           retried; may say when (retry_after)
    └── JournalMismatchError     replay diverged from the journal (code 570); pauses the invocation

Ending an attempt early (suspend mode, or a 409 from the proxy) is not an exception: the SDK cancels
the handler's task, so ``except Exception`` in user code cannot swallow it.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "JOURNAL_MISMATCH",
    "JournalMismatchError",
    "RetryableError",
    "TerminalError",
]

#: Restate's code for a journal mismatch.
JOURNAL_MISMATCH = 570


class TerminalError(Exception):
    """Fails the step or invocation for good; the proxy answers with `status_code`."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class RetryableError(Exception):
    """An error that is retried, optionally not before `retry_after`."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class JournalMismatchError(Exception):
    """The handler's code no longer produces the journal it is replaying (non-determinism)."""

    code = JOURNAL_MISMATCH

    def __init__(self, index: int, recorded: str, attempted: str) -> None:
        super().__init__(f"journal mismatch at index {index}: recorded {recorded}, replay attempted {attempted}")
        self.index = index
        self.recorded = recorded
        self.attempted = attempted
