"""What the `LocalRuntime` does per entry kind, in the proxy's place.

Two tables, both keyed by entry class and copied into every runtime (override one kind with
`LocalRuntime.register_commit_hook` / `register_completer`). A new entry kind needs a function
here:

*commit hooks* run when a new entry is committed, as the proxy's journal write does:

* sleep, call, awakeable: stored uncompleted (whatever the handler sent);
* call the proxy would refuse: completed at once with a failure: an unknown target (404), a
  keyed one without a key (400), a workflow's run that already happened (409);
* send: its target is started once the current invocation is done (a no-op where the proxy
  would refuse it, or for a workflow's run that already happened);
* set/clear/clear-all state: applied to the object's state (`LocalRuntime.state`);
* promise peek and complete: completed at once; completing a promise stores it
  (`LocalRuntime.promises`); a promise get completes at once if the promise is already there.

*completers* run when the handler suspends waiting on an entry:

* sleep: completes at once, moving the fake clock to the timer's deadline;
* awakeable: completes once the test resolved or rejected it (`LocalRuntime.resolve_awakeable`);
* call: runs the callee in the same runtime and completes with its result or terminal failure;
* promise get: completes once some handler of the workflow key resolved or rejected it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from handlers_sdk.protocol import (
    NULL,
    AwakeableEntry,
    CallEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    Completed,
    Entry,
    Failed,
    Failure,
    PromiseCompleteEntry,
    PromiseGetEntry,
    PromisePeekEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
)

if TYPE_CHECKING:
    from handlers_sdk.testing.runtime import CommitHook, Completer, Completion, Invocation, LocalRuntime

__all__ = [
    "DEFAULT_COMMIT_HOOKS",
    "DEFAULT_COMPLETERS",
    "commit_call",
    "commit_promise",
    "commit_send",
    "commit_state",
    "commit_uncompleted",
    "complete_awakeable",
    "complete_call",
    "complete_promise_get",
    "complete_sleep",
]


def _completion(entry: Entry, at_ms: int | None = None) -> Completion:
    from handlers_sdk.testing.runtime import Completion

    return Completion(entry, at_ms)


# -- commit hooks --------------------------------------------------------------------------------


def commit_uncompleted(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Entry:
    """Sleeps and awakeables are stored uncompleted, whatever the handler sent."""
    if isinstance(entry, AwakeableEntry):
        return msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
    result: Entry = msgspec.structs.replace(entry, completed=False, seq=0)
    return result


def _refusal(rt: LocalRuntime, entry: CallEntry | SendEntry) -> Failure | None:
    """Why the proxy would not start the target of a call or send (None: it would).

    Also claims a workflow key's run for this child, as the proxy does when it journals the entry.
    """
    svc = rt.services.get(entry.service)
    if svc is None:
        return Failure(code=404, message=f"service {entry.service!r} not found")
    target = svc.handlers.get(entry.handler)
    if target is None:
        return Failure(code=404, message=f"handler {entry.handler!r} not found in service {entry.service!r}")
    if target.service_type != "service" and not entry.key:
        return Failure(code=400, message=f"{entry.service} is a keyed {target.service_type}: a key is required")
    if target.kind == "workflow" and rt.keys.claim_run((entry.service, entry.key), entry.invocation_id) != (
        entry.invocation_id
    ):
        return Failure(code=409, message=f"workflow '{entry.service}/{entry.key}' was already run")
    return None


def commit_call(rt: LocalRuntime, inv: Invocation, index: int, entry: CallEntry) -> Entry:
    """A call is stored uncompleted. One the proxy would refuse fails at once: an unknown target
    (404), a keyed one without a key (400), a workflow's run that already happened (409)."""
    entry = msgspec.structs.replace(entry, completed=False, value=NULL, failure=None, seq=0)
    failure = _refusal(rt, entry)
    if failure is not None:
        return rt.numbered(inv, msgspec.structs.replace(entry, completed=True, failure=failure))
    return entry


def commit_send(rt: LocalRuntime, inv: Invocation, index: int, entry: SendEntry) -> Entry:
    """A one-way send starts its target after the current work; a send the proxy would refuse
    (unknown target, missing key) or a repeated workflow run is a no-op."""
    inv.sends.append(entry.invocation_id)
    if _refusal(rt, entry) is None:
        rt.queue_send(entry.invocation_id, entry)
    return entry


def commit_state(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Entry:
    """A state write is applied to the object's state as it is journaled."""
    state = rt.state.setdefault((inv.service, inv.key), {})
    if isinstance(entry, SetStateEntry):
        state[entry.key] = bytes(entry.value)
    elif isinstance(entry, ClearStateEntry):
        state.pop(entry.key, None)
    elif isinstance(entry, ClearAllStateEntry):
        state.clear()
    result: Entry = entry
    return result


def commit_promise(rt: LocalRuntime, inv: Invocation, index: int, entry: Any) -> Entry:
    """Promise operations: peek and complete are answered at once; get waits unless resolved."""
    key = (inv.service, inv.key, entry.name)
    promise = rt.promises.get(key)
    if isinstance(entry, PromiseGetEntry):
        if promise is None:
            return msgspec.structs.replace(entry, completed=False, seq=0)
        value, failure = promise
        got = msgspec.structs.replace(entry, completed=True, value=msgspec.Raw(value), failure=failure)
        return rt.numbered(inv, got)
    if isinstance(entry, PromisePeekEntry):
        value, failure = promise if promise is not None else (b"null", None)
        peeked = msgspec.structs.replace(
            entry, completed=True, found=promise is not None, value=msgspec.Raw(value), failure=failure
        )
        return rt.numbered(inv, peeked)
    assert isinstance(entry, PromiseCompleteEntry)
    if promise is not None:
        failure = Failure(code=409, message=f"promise {entry.name!r} is already completed")
        return rt.numbered(inv, msgspec.structs.replace(entry, completed=True, value=NULL, failure=failure))
    rt.promises[key] = (bytes(entry.resolution) if entry.rejection is None else b"null", entry.rejection)
    return rt.numbered(inv, msgspec.structs.replace(entry, completed=True, value=NULL, failure=None))


# -- completers ----------------------------------------------------------------------------------


async def complete_sleep(rt: LocalRuntime, inv: Invocation, index: int, entry: SleepEntry) -> Completion:
    """A timer fires at its deadline on the fake clock: no real waiting."""
    at_ms = rt.fake_deadline(inv, index, entry.wake_at_ms)
    return _completion(msgspec.structs.replace(entry, completed=True), at_ms)


async def complete_awakeable(rt: LocalRuntime, inv: Invocation, index: int, entry: AwakeableEntry) -> Completion | None:
    """An awakeable completes with what the test resolved or rejected it with, if it did."""
    resolution = rt._awakeables.get(entry.id)
    if resolution is None:
        return None
    value, failure = resolution
    return _completion(msgspec.structs.replace(entry, completed=True, value=msgspec.Raw(value), failure=failure))


async def complete_call(rt: LocalRuntime, inv: Invocation, index: int, entry: CallEntry) -> Completion | None:
    """A call runs the callee in process; it completes once the callee has (or at once with the
    failure the proxy would give a call it refuses, if a replaced commit hook let one through)."""
    failure = _refusal(rt, entry)
    if failure is not None:
        return _completion(msgspec.structs.replace(entry, completed=True, failure=failure))
    child = await rt._run_child(entry.service, entry.handler, entry.key, bytes(entry.input), entry.invocation_id)
    outcome = child.outcome
    if isinstance(outcome, Completed):
        return _completion(msgspec.structs.replace(entry, completed=True, value=outcome.value))
    if isinstance(outcome, Failed):
        return _completion(msgspec.structs.replace(entry, completed=True, failure=outcome.failure))
    return None


async def complete_promise_get(
    rt: LocalRuntime, inv: Invocation, index: int, entry: PromiseGetEntry
) -> Completion | None:
    """A promise get completes once the promise of the workflow key is resolved or rejected."""
    promise = rt.promises.get((inv.service, inv.key, entry.name))
    if promise is None:
        return None
    value, failure = promise
    return _completion(msgspec.structs.replace(entry, completed=True, value=msgspec.Raw(value), failure=failure))


def _completers() -> dict[type, Completer]:
    table: dict[type, Any] = {
        SleepEntry: complete_sleep,
        AwakeableEntry: complete_awakeable,
        CallEntry: complete_call,
        PromiseGetEntry: complete_promise_get,
    }
    return table


def _commit_hooks() -> dict[type, CommitHook]:
    table: dict[type, Any] = {
        SleepEntry: commit_uncompleted,
        AwakeableEntry: commit_uncompleted,
        CallEntry: commit_call,
        SendEntry: commit_send,
        SetStateEntry: commit_state,
        ClearStateEntry: commit_state,
        ClearAllStateEntry: commit_state,
        PromiseGetEntry: commit_promise,
        PromisePeekEntry: commit_promise,
        PromiseCompleteEntry: commit_promise,
    }
    return table


#: Completer per entry class, copied into every `LocalRuntime`.
DEFAULT_COMPLETERS: dict[type, Completer] = _completers()
#: Commit hook per entry class, copied into every `LocalRuntime`.
DEFAULT_COMMIT_HOOKS: dict[type, CommitHook] = _commit_hooks()
