"""The pure replay machine: index allocation and journal matching. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable

from handlers_sdk.errors import JournalMismatchError
from handlers_sdk.protocol import Entry, JournalItem, RunEntry

__all__ = ["Replay", "describe"]


def describe(entry: Entry) -> str:
    """A short human description of an entry, used in mismatch diffs: ``run "charge"``."""
    if isinstance(entry, RunEntry):
        return f'run "{entry.name}"'
    return type(entry).__name__  # pragma: no cover - future entry kinds


class Replay:
    """Allocates journal indexes in creation order and matches them against the recorded journal.

    Indexes are handed out in the order the handler *creates* operations, so two steps started
    by ``asyncio.gather`` always get the same indexes on replay. The recorded journal may have
    gaps (a later step of a gather was acknowledged before an earlier one); a gap is simply an
    operation that has not completed yet and runs again.
    """

    def __init__(self, journal: Iterable[JournalItem]) -> None:
        self._recorded: dict[int, Entry] = {item.index: item.entry for item in journal}
        self._next = 0

    @property
    def next_index(self) -> int:
        """The index the next operation will get."""
        return self._next

    @property
    def recorded_count(self) -> int:
        """How many entries the recorded journal holds."""
        return len(self._recorded)

    def allocate(self) -> int:
        """Hand out the next journal index."""
        index = self._next
        self._next += 1
        return index

    def match_run(self, index: int, name: str) -> RunEntry | None:
        """The recorded entry for a `ctx.run` at `index`, or None if the step is new.

        Raises:
            JournalMismatchError: the recorded entry is of another kind or has another name.
        """
        recorded = self._recorded.get(index)
        if recorded is None:
            return None
        attempted = f'run "{name}"'
        if not isinstance(recorded, RunEntry) or recorded.name != name:
            raise JournalMismatchError(index, describe(recorded), attempted)
        return recorded
