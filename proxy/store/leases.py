"""The lease tables on PostgreSQL: which proxy owns which partition, under which epoch.

Two tables of the schema (created by the migration to version 4, `DDL`):

* ``durable_proxy.members (proxy text PRIMARY KEY, expires_at timestamptz, joined_at timestamptz)``:
  one row per proxy, its heartbeat. A proxy is live while ``expires_at > now()`` (the database's
  clock: the only one every proxy shares).
* ``durable_proxy.leases (partition integer PRIMARY KEY, owner text, epoch bigint)``: one row per
  partition. Its owner's heartbeat renews all of a proxy's leases at once, so the row only
  changes hands: taken (``epoch + 1``) when it has no live owner, released (owner NULL) when its
  owner stops or hands it to a proxy that joined.

Fencing (`FENCE`): a write transaction acting as owner locks its partitions' rows ``FOR SHARE``
and checks owner and epoch in the same transaction. A takeover locks the row ``FOR UPDATE SKIP
LOCKED``, so it waits for no owner's commit, and an owner whose row changed (taken while it was
paused or cut off) finds another owner or epoch there and commits nothing. Safety does not depend
on any clock; time only decides when a partition may be taken.

Every function here runs one transaction on the connection it is given (autocommit, its own:
never the writer's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is imported only on PostgreSQL (an LMDB proxy never loads libpq)
    import psycopg

__all__ = ["DDL", "FENCE", "Ownership", "heartbeat", "leave", "partition_count", "release", "seed", "take"]


#: What the migration to schema version 4 creates (its rows are added by `seed`).
DDL: tuple[str, ...] = (
    "CREATE TABLE durable_proxy.members (proxy text PRIMARY KEY, expires_at timestamptz NOT NULL,"
    " joined_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE durable_proxy.leases (partition integer PRIMARY KEY, owner text, epoch bigint NOT NULL DEFAULT 0)",
    "CREATE TABLE durable_proxy.cluster (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " partitions integer NOT NULL)",
)

#: The partitions of `owner` among those asked, locked until the transaction ends (the writer's fence).
FENCE = (
    b"SELECT partition, epoch FROM durable_proxy.leases WHERE owner = %s AND partition = ANY(%s::integer[]) FOR SHARE"
)


def seed(conn: psycopg.Connection[tuple[Any, ...]], partitions: int) -> None:
    """Record the partition count and create one lease row per partition (inside the migration)."""
    conn.execute(b"INSERT INTO durable_proxy.cluster (one, partitions) VALUES (true, %s)", (partitions,))
    conn.execute(
        b"INSERT INTO durable_proxy.leases (partition) SELECT generate_series(0, %s - 1)",
        (partitions,),
    )


def partition_count(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The partition count the database was created with."""
    row = conn.execute(b"SELECT partitions FROM durable_proxy.cluster").fetchone()
    if row is None:
        raise RuntimeError("the database has no partition count (schema not migrated)")
    return int(row[0])


class Ownership:
    """What a heartbeat found: this proxy's leases, the live proxies, and the free partitions."""

    __slots__ = ("free", "members", "owned")

    def __init__(self, owned: dict[int, int], members: dict[str, int], free: int) -> None:
        #: partition -> epoch, of this proxy.
        self.owned = owned
        #: Live proxies -> milliseconds their heartbeat still has.
        self.members = members
        #: Partitions with no live owner.
        self.free = free


_OWNED = b"SELECT partition, epoch FROM durable_proxy.leases WHERE owner = %s"
_MEMBERS = (
    b"SELECT proxy, (extract(epoch FROM expires_at - now()) * 1000)::bigint FROM durable_proxy.members"
    b" WHERE expires_at > now()"
)
_FREE = (
    b"SELECT count(*) FROM durable_proxy.leases l LEFT JOIN durable_proxy.members m"
    b" ON m.proxy = l.owner AND m.expires_at > now() WHERE m.proxy IS NULL"
)


def heartbeat(conn: psycopg.Connection[tuple[Any, ...]], proxy: str, lease_ms: int) -> Ownership:
    """Renew `proxy`'s heartbeat (and so every lease it holds) for `lease_ms`; read what it owns."""
    with conn.transaction():
        conn.execute(
            b"INSERT INTO durable_proxy.members (proxy, expires_at) VALUES (%s, now() + %s * interval '1 millisecond')"
            b" ON CONFLICT (proxy) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            (proxy, lease_ms),
        )
        # Members gone for long are forgotten (their leases are free whatever their row says).
        conn.execute(b"DELETE FROM durable_proxy.members WHERE expires_at < now() - interval '1 hour'")
        owned = {int(p): int(e) for p, e in conn.execute(_OWNED, (proxy,)).fetchall()}
        members = {str(m): int(left) for m, left in conn.execute(_MEMBERS).fetchall()}
        free_row = conn.execute(_FREE).fetchone()
    return Ownership(owned, members, int(free_row[0]) if free_row else 0)


def take(conn: psycopg.Connection[tuple[Any, ...]], proxy: str, count: int) -> dict[int, int]:
    """Take up to `count` partitions that have no live owner; returns partition -> new epoch.

    Rows an owner holds locked right now (a commit in flight) are skipped, not waited for.
    """
    if count <= 0:
        return {}
    with conn.transaction():
        rows = conn.execute(
            b"UPDATE durable_proxy.leases SET owner = %s, epoch = epoch + 1 WHERE partition IN ("
            b" SELECT l.partition FROM durable_proxy.leases l LEFT JOIN durable_proxy.members m"
            b"  ON m.proxy = l.owner AND m.expires_at > now()"
            b"  WHERE m.proxy IS NULL ORDER BY random() LIMIT %s FOR UPDATE OF l SKIP LOCKED)"
            b" RETURNING partition, epoch",
            (proxy, count),
        ).fetchall()
    return {int(p): int(e) for p, e in rows}


def release(conn: psycopg.Connection[tuple[Any, ...]], proxy: str, partitions: list[int]) -> None:
    """Hand partitions back (still owned by `proxy`): free for any proxy at once."""
    if not partitions:
        return
    with conn.transaction():
        conn.execute(
            b"UPDATE durable_proxy.leases SET owner = NULL WHERE owner = %s AND partition = ANY(%s::integer[])",
            (proxy, partitions),
        )


def leave(conn: psycopg.Connection[tuple[Any, ...]], proxy: str) -> None:
    """A proxy stopping: release every lease it holds and remove its heartbeat."""
    with conn.transaction():
        conn.execute(b"UPDATE durable_proxy.leases SET owner = NULL WHERE owner = %s", (proxy,))
        conn.execute(b"DELETE FROM durable_proxy.members WHERE proxy = %s", (proxy,))
