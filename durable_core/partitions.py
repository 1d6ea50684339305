"""Partitions: how the work of several proxies on one database is split, and the share each takes.

Every invocation belongs to one partition, a hash of its id (`partition_of`); so do its journal,
its attempts, its retries and its timers (a schedule's timer by the schedule's timer id). A
partition is driven by one proxy at a time, the owner of its lease (`proxy.engine.leases`):
only the owner sends attempts, accepts their step acks, arms retries and fires timers, and every
one of those writes is fenced by the lease's epoch in its own transaction. Anything else (a new
invocation, an awakeable resolved, a cancel) any proxy writes; the database's isolation keeps
those exact, and the owner hears of what it must do next by a notice.

The hash is of the id alone, not of an object's key: an object key's invocations may live in
different partitions, and its queue is kept exact by the database (its lock and inbox rows), not
by one owner. So a partition can be moved without looking at any row.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import zlib

__all__ = ["DEFAULT_PARTITIONS", "MAX_PARTITIONS", "Share", "fair_share", "partition_of", "plan_share"]

#: Partitions of a new database (fixed once it is created: every row's owner derives from it).
DEFAULT_PARTITIONS = 16
#: More partitions than this only cost lease rows and rebalancing churn.
MAX_PARTITIONS = 4096


def partition_of(invocation_id: str, partitions: int) -> int:
    """The partition of an invocation (or of a schedule, by its timer id): CRC-32 of the id, which
    every proxy computes alike (Python's `hash` is salted per process)."""
    return zlib.crc32(invocation_id.encode("ascii", "surrogateescape")) % partitions


def fair_share(partitions: int, members: int) -> int:
    """How many partitions one of `members` live proxies should own: the ceiling of the even split."""
    return -(-partitions // max(1, members))


class Share:
    """What one proxy should do with its leases after a heartbeat (`plan_share`)."""

    __slots__ = ("release", "take")

    def __init__(self, take: int, release: list[int]) -> None:
        #: How many free partitions (unowned, or their owner's heartbeat expired) to take.
        self.take = take
        #: Owned partitions to hand back, so that a proxy that joined gets its share.
        self.release = release


def plan_share(owned: set[int], partitions: int, members: int, free: int) -> Share:
    """Take free partitions up to the fair share; hand back what is over it, but only when no
    partition is free (a proxy that left frees its partitions: take those first, and never
    release while some work has no owner at all).

    Args:
        owned: the partitions this proxy owns now.
        partitions: how many there are.
        members: live proxies, this one included.
        free: partitions with no live owner.
    """
    share = fair_share(partitions, members)
    if len(owned) < share:
        return Share(min(share - len(owned), free), [])
    if len(owned) > share and free == 0:
        # Hand back the highest-numbered ones: two proxies planning at once agree on which.
        return Share(0, sorted(owned)[share:])
    return Share(0, [])
