"""What a test can plug into a `LocalRuntime`: completers for waited-on entries, observers of commits.

The runtime needs neither to do the proxy's work: it runs the proxy's own state machine
(`durable_core.machine.Machine`), so timers fire, callees run, and awakeables and promises
complete as they do through the proxy. A test adds to that:

* a *completer* (`LocalRuntime.register_completer`) for the entries of one class that a suspended
  invocation waits on. It returns a `Completion` (the entry completed with a value or a failure,
  and when on the fake clock) or None, and the runtime applies it through the machine's
  completion path (`Machine.complete_entry`), as a fired timer or a finished callee would be.
  A `SleepEntry` completer also stands in for the timers of sleeps: they no longer fire by
  themselves, so one that returns None keeps a timer open.
* a *commit hook* (`LocalRuntime.register_commit_hook`): an observer called after an entry of
  one class that a handler created is committed. It gets the entry as journaled and may act
  through the runtime's public API (resolve an awakeable, say); what it returns is ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handlers_sdk.protocol import AwakeableEntry, CallEntry, Entry, Failure, PromiseGetEntry

if TYPE_CHECKING:
    from handlers_sdk.testing.invocation import Invocation
    from handlers_sdk.testing.runtime import LocalRuntime

__all__ = ["CommitHook", "Completer", "Completion", "completion_result"]


@dataclass(frozen=True)
class Completion:
    """What a completer decided: the completed entry, and when (fake clock) it completes.

    Only the entry's result is used (its ``value``, or its ``failure``): the machine completes the
    journaled entry with it and numbers the completion (``seq``) as it numbers every other one.
    """

    entry: Entry
    #: Fake-clock milliseconds at which the completion happens; None means "now".
    at_ms: int | None = None


#: Completes one waited-on entry, or returns None if it cannot be completed (yet). Registered per
#: entry class with `LocalRuntime.register_completer`; called with the runtime, the invocation,
#: the index and the entry, each time the invocation suspends waiting on that entry (and on
#: `LocalRuntime.resume`).
Completer = Callable[["LocalRuntime", "Invocation", int, Any], Awaitable["Completion | None"]]
#: Observes a newly committed entry of one class. Registered per entry class with
#: `LocalRuntime.register_commit_hook`; called with the runtime, the invocation, the index and the
#: entry as journaled, after the commit. Its return value is ignored.
CommitHook = Callable[["LocalRuntime", "Invocation", int, Any], object]


def completion_result(entry: Entry) -> tuple[bytes | None, Failure | None]:
    """(JSON value, failure) of a completed entry, as the machine's completion path takes them.

    A sleep carries neither; a call, an awakeable or a promise get carries its failure, or else its
    value.
    """
    if isinstance(entry, CallEntry | AwakeableEntry | PromiseGetEntry):
        if entry.failure is not None:
            return None, entry.failure
        return bytes(entry.value), None
    return None, None
