"""The pure replay machine: index allocation and journal matching. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from handlers_sdk.errors import JournalMismatchError
from handlers_sdk.protocol import (
    COMPLETABLE,
    CallEntry,
    CancelEntry,
    ClearAllStateEntry,
    ClearStateEntry,
    CompletableEntry,
    Entry,
    GetStateEntry,
    JournalItem,
    PatchEntry,
    PromiseCompleteEntry,
    PromiseGetEntry,
    PromisePeekEntry,
    RunEntry,
    SendEntry,
    SetStateEntry,
    SleepEntry,
    StateKeysEntry,
)

__all__ = ["Replay", "describe", "header"]


def header(entry: Entry) -> tuple[str, ...]:
    """What must be equal between a recorded entry and the replayed operation (not results)."""
    if isinstance(entry, RunEntry):
        return ("run", entry.name)
    if isinstance(entry, SleepEntry):
        return ("sleep", entry.name)
    if isinstance(entry, CallEntry | SendEntry):
        kind = "call" if isinstance(entry, CallEntry) else "send"
        return (kind, entry.service, entry.handler, entry.key)
    if isinstance(entry, GetStateEntry | SetStateEntry | ClearStateEntry):
        return (_TAGS[type(entry)], entry.key)
    if isinstance(entry, PromiseGetEntry | PromisePeekEntry | PromiseCompleteEntry):
        return (_TAGS[type(entry)], entry.name)
    if isinstance(entry, ClearAllStateEntry | StateKeysEntry):
        return (_TAGS[type(entry)],)
    if isinstance(entry, CancelEntry):
        return ("cancel",)
    if isinstance(entry, PatchEntry):
        return ("patch", entry.name)
    return ("awakeable",)


_TAGS: dict[type, str] = {
    GetStateEntry: "get_state",
    SetStateEntry: "set_state",
    ClearStateEntry: "clear_state",
    ClearAllStateEntry: "clear_all_state",
    StateKeysEntry: "state_keys",
    PromiseGetEntry: "promise_get",
    PromisePeekEntry: "promise_peek",
    PromiseCompleteEntry: "promise_complete",
}


def describe(entry: Entry) -> str:
    """A short human description of an entry, used in mismatch diffs: ``run "charge"``."""
    kind, *fields = header(entry)
    if kind in ("run", "sleep", "patch"):
        return f'{kind} "{fields[0]}"' if fields[0] or kind != "sleep" else kind
    if kind in ("call", "send"):
        service, handler, key = fields
        return f"{kind} {service}/{key + '/' if key else ''}{handler}"
    if fields:
        return f'{kind} "{fields[0]}"'
    return kind


class Replay:
    """Allocates journal indexes in creation order and matches them against the recorded journal.

    Indexes are handed out in the order the handler *creates* operations, so two steps started
    by ``asyncio.gather`` always get the same indexes on replay. The recorded journal may have
    gaps (a later step of a gather was acknowledged before an earlier one); a gap is simply an
    operation that has not completed yet and runs again.

    Args:
        journal: the recorded journal.
        on_allocate: an observer called with every index handed out, synchronously, in the task
            that asked for it (the toolkit ties each step body to its journal index this way).
    """

    def __init__(self, journal: Iterable[JournalItem], on_allocate: Callable[[int], None] | None = None) -> None:
        self._recorded: dict[int, Entry] = {item.index: item.entry for item in journal}
        self._next = 0
        self._on_allocate = on_allocate
        #: The highest recorded index (-1 for an empty journal): past it, the code runs anew.
        self._last = max(self._recorded, default=-1)
        self._seen_seq: int | None = None

    @property
    def next_index(self) -> int:
        """The index the next operation will get."""
        return self._next

    @property
    def recorded_count(self) -> int:
        """How many entries the recorded journal holds."""
        return len(self._recorded)

    def recorded(self, index: int) -> Entry | None:
        """The recorded entry at `index`, if any (no matching, no allocation)."""
        return self._recorded.get(index)

    def passed(self, index: int) -> bool:
        """True if the recorded journal reaches `index` or beyond: an earlier run of the code went
        past this point (an index with no entry below the last one is an operation that was
        created but not journaled, as the later entries of a gather can be)."""
        return index <= self._last

    def allocate(self) -> int:
        """Hand out the next journal index."""
        index = self._next
        self._next += 1
        if self._on_allocate is not None:
            self._on_allocate(index)
        return index

    def match(self, index: int, attempted: Entry) -> Entry | None:
        """The recorded entry at `index` if it matches `attempted`, or None if the operation is new.

        Raises:
            JournalMismatchError: the recorded entry is another operation (kind or identity).
        """
        recorded = self._recorded.get(index)
        if recorded is None:
            return None
        if header(recorded) != header(attempted):
            raise JournalMismatchError(index, describe(recorded), describe(attempted))
        return recorded

    def match_run(self, index: int, name: str) -> RunEntry | None:
        """The recorded entry for a `ctx.run` at `index`, or None if the step is new."""
        recorded = self.match(index, RunEntry(name=name))
        assert recorded is None or isinstance(recorded, RunEntry)
        return recorded

    def cancel_marker(self) -> tuple[int, CancelEntry] | None:
        """Where an earlier attempt raised the cancellation in the handler, if one did."""
        for index in sorted(self._recorded):
            entry = self._recorded[index]
            if isinstance(entry, CancelEntry):
                return index, entry
        return None

    def seen_seq(self) -> int:
        """The highest completion ``seq`` in the recorded journal (0 if none)."""
        if self._seen_seq is None:  # the journal never changes: scanned once, not once per step
            completed = (e.seq for e in self._recorded.values() if isinstance(e, COMPLETABLE) and e.completed)
            self._seen_seq = max(completed, default=0)
        return self._seen_seq

    def completion(self, index: int) -> CompletableEntry | None:
        """The recorded entry at `index` if the proxy has completed it, else None."""
        recorded = self._recorded.get(index)
        if isinstance(recorded, COMPLETABLE) and recorded.completed:
            return recorded
        return None
