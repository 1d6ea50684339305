"""Default completers of the `LocalRuntime`: how the in-process "proxy" completes each entry kind.

One function per completable entry kind, registered in `DEFAULT_COMPLETERS` by entry class. A
new entry kind needs one function here (or `LocalRuntime.register_completer` in a test):

* sleep: completes at once, moving the fake clock to the timer's deadline;
* awakeable: completes once the test resolved or rejected it (`LocalRuntime.resolve_awakeable`);
* call: runs the callee in the same runtime (it must be one of its services) and completes with
  its result or terminal failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from handlers_sdk.protocol import AwakeableEntry, CallEntry, Completed, Failed, Failure, SleepEntry

if TYPE_CHECKING:
    from handlers_sdk.testing.runtime import Completer, Completion, Invocation, LocalRuntime

__all__ = ["DEFAULT_COMPLETERS", "complete_awakeable", "complete_call", "complete_sleep"]


async def complete_sleep(rt: LocalRuntime, inv: Invocation, index: int, entry: SleepEntry) -> Completion:
    """A timer fires at its deadline on the fake clock: no real waiting."""
    from handlers_sdk.testing.runtime import Completion

    return Completion(
        msgspec.structs.replace(entry, completed=True), at_ms=rt.fake_deadline(inv, index, entry.wake_at_ms)
    )


async def complete_awakeable(rt: LocalRuntime, inv: Invocation, index: int, entry: AwakeableEntry) -> Completion | None:
    """An awakeable completes with what the test resolved or rejected it with, if it did."""
    from handlers_sdk.testing.runtime import Completion

    resolution = rt._awakeables.get(entry.id)
    if resolution is None:
        return None
    value, failure = resolution
    return Completion(msgspec.structs.replace(entry, completed=True, value=msgspec.Raw(value), failure=failure))


async def complete_call(rt: LocalRuntime, inv: Invocation, index: int, entry: CallEntry) -> Completion | None:
    """A call runs the callee in process; it completes once the callee has."""
    from handlers_sdk.testing.runtime import Completion

    if entry.service not in rt.services:
        return Completion(
            msgspec.structs.replace(
                entry, completed=True, failure=Failure(code=404, message=f"service {entry.service!r} not found")
            )
        )
    child = await rt._run_child(entry.service, entry.handler, entry.key, bytes(entry.input), entry.invocation_id)
    outcome = child.outcome
    if isinstance(outcome, Completed):
        return Completion(msgspec.structs.replace(entry, completed=True, value=outcome.value))
    if isinstance(outcome, Failed):
        return Completion(msgspec.structs.replace(entry, completed=True, failure=outcome.failure))
    return None


def _defaults() -> dict[type, Completer]:
    table: dict[type, Any] = {
        SleepEntry: complete_sleep,
        AwakeableEntry: complete_awakeable,
        CallEntry: complete_call,
    }
    return table


#: Completer per entry class, copied into every `LocalRuntime`.
DEFAULT_COMPLETERS: dict[type, Completer] = _defaults()
