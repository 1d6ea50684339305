"""The PostgreSQL store (`proxy.store.postgres`) beyond the conformance suite, on the session's
private cluster (`tests.postgres`; skipped with the reason where PostgreSQL is missing).

The schema: created once by stores opening at once, a newer schema refused. Several stores on
one database: a write that raced another store's is a `StoreConflict`; the lease fence
(`PostgresTxn.hold`) sees only this proxy's partitions and keeps a takeover off them until it
commits. Connections: an unreachable database or a wrong
password is `StoreUnavailable` without the secret in the message; connections killed while idle
(a database restart between two requests) are replaced without an error. The runtime on it: an
in-process proxy with steps, object state, an idempotency key and a fake-clock sleep; the
writer's batch isolation; stats and metrics without LMDB and without the password.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest

from durable_core.errors import Conflict
from durable_core.txn import DBS, Txn
from handlers_sdk import Context, ObjectContext, Service, VirtualObject
from handlers_sdk.clock import FakeClock
from proxy.config import settings_from
from proxy.store import StoreConflict, StoreFailure, StoreUnavailable, leases
from proxy.store.postgres import (
    SCHEMA,
    SCHEMA_VERSION,
    PostgresStore,
    prefix_upper_bound,
    redact,
)
from tests.component.harness import StartHarness
from tests.postgres import PASSWORD, USER, PgCluster, pg_cluster

__all__ = ["pg_cluster"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database."""
    return pg_cluster.fresh_database("component")


@pytest.fixture
def opened(url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(url)
    store.open()
    try:
        yield store
    finally:
        store.close()


# -- pure helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=secret&sslmode=disable", "postgresql://u@h/db?password=***&sslmode=disable"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgres://u:a:b@h/db", "postgres://u:***@h/db"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [(b"a", b"b"), (b"a\x00", b"a\x01"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", None), (b"", None)],
)
def test_prefix_upper_bound(prefix: bytes, upper: bytes | None) -> None:
    """The smallest key above every key that starts with the prefix (None: no such key)."""
    assert prefix_upper_bound(prefix) == upper


def test_store_setting_takes_a_postgresql_url_from_flag_or_env() -> None:
    """``--store`` / ``PROXY_STORE``; empty means LMDB; anything but a postgresql:// URL is refused
    without echoing it."""
    assert settings_from([], env={}).store == ""
    url = "postgresql://u:pw-xyz@h/db"
    assert settings_from([], env={"PROXY_STORE": url}).store == url
    assert settings_from(["--store", url], env={"PROXY_STORE": "postgresql://other/db"}).store == url
    with pytest.raises(SystemExit):
        settings_from(["--store", "mysql://u:pw-xyz@h/db"], env={})


# -- schema -----------------------------------------------------------------------------------------


def test_stores_opening_at_once_create_the_schema_once(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.store.postgres")
    stores = [PostgresStore(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def open_one(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.open()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == []
        assert [store.schema_version for store in stores] == [SCHEMA_VERSION] * 4
        # One proxy migrates (through every version), the others wait for it and find it done.
        migrations = [r.getMessage() for r in caplog.records if "migrated to version" in r.getMessage()]
        assert len(migrations) == SCHEMA_VERSION and f"migrated to version {SCHEMA_VERSION}" in migrations[-1]
        with psycopg.connect(url) as conn:
            assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.schema_version").fetchone() == (1,)
    finally:
        for store in stores:
            store.close()


def test_a_schema_newer_than_the_proxy_is_refused(url: str) -> None:
    store = PostgresStore(url)
    store.open()
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.schema_version SET version = 99")
    with pytest.raises(StoreFailure, match=f"schema version 99, newer than this proxy's {SCHEMA_VERSION}"):
        PostgresStore(url).open()


#: The tables of schema version 1 (frozen: the first proxy's databases have exactly these).
_VERSION_1_TABLES = frozenset({
    "invocations", "inputs", "journal", "idempotency", "active", "deployments", "services", "timers",
    "locks", "inbox", "state", "workflows", "promises", "promise_waiters", "expiry", "meta",
})  # fmt: skip


def test_a_version_1_schema_is_migrated_to_every_table_of_now(url: str) -> None:
    """A database made by a proxy of schema version 1 gets the tables added since (schedules,
    held fires, pins, ...) when a current proxy opens it."""
    store = PostgresStore(url)
    store.open()
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        for name in [*sorted(set(DBS) - _VERSION_1_TABLES), "members", "leases", "cluster"]:
            conn.execute(f"DROP TABLE {SCHEMA}.{name}")
        conn.execute(f"UPDATE {SCHEMA}.schema_version SET version = 1")
    migrated = PostgresStore(url)
    migrated.open()
    try:
        assert migrated.schema_version == SCHEMA_VERSION
        assert migrated.partitions == 16
        txn = migrated.begin()
        txn.put("schedules", b"k", b"v")
        txn.commit()
        with migrated.read() as read:
            assert read.get("schedules", b"k") == b"v"
    finally:
        migrated.close()


def test_a_write_that_raced_another_store_is_a_conflict(url: str, opened: PostgresStore) -> None:
    """Two proxies' writers on one database: each reads a row and writes it; the one that commits
    second read a row the first changed, and its whole transaction fails (the writer runs it again)."""
    other = PostgresStore(url)
    other.open()
    try:
        setup = opened.begin()
        setup.put("meta", b"counter", b"0")
        setup.commit()
        first, second = opened.begin(), other.begin()
        assert first.get("meta", b"counter") == b"0" and second.get("meta", b"counter") == b"0"
        first.put("meta", b"counter", b"1")
        first.commit()
        second.put("meta", b"counter", b"1")
        with pytest.raises(StoreConflict, match="a concurrent write won"):
            second.commit()
        assert other.get("meta", b"counter") == b"1"
        again = other.begin()  # run again: it sees the first one's write
        assert again.get("meta", b"counter") == b"1"
        again.put("meta", b"counter", b"2")
        again.commit()
        assert opened.get("meta", b"counter") == b"2"
    finally:
        other.close()


def test_the_fence_sees_only_this_proxys_partitions_and_holds_off_a_takeover(url: str, opened: PostgresStore) -> None:
    conn = opened.connect()
    try:
        leases.heartbeat(conn, "proxy-a", 60_000)
        taken = leases.take(conn, "proxy-a", 3)
        assert len(taken) == 3 and all(epoch == 1 for epoch in taken.values())
        mine = sorted(taken)
        txn = opened.begin()
        assert txn.hold("proxy-a", [*mine, 99]) == dict(taken)
        assert txn.hold("proxy-b", mine) == {}
        # proxy-a's heartbeat "expires": proxy-b may take its partitions, except those locked
        # by proxy-a's open transaction, which it skips rather than waiting for.
        conn.execute("UPDATE durable_proxy.members SET expires_at = now() - interval '1 second'")
        leases.heartbeat(conn, "proxy-b", 60_000)
        took = leases.take(conn, "proxy-b", 16)
        assert not set(took) & set(mine) and len(took) == 16 - 3
        txn.put("inputs", b"k", b"v")
        txn.commit()
        took = leases.take(conn, "proxy-b", 16)  # unlocked now
        assert sorted(took) == mine and all(epoch == 2 for epoch in took.values())
        txn = opened.begin()
        assert txn.hold("proxy-a", mine) == {}  # proxy-a's writes as owner would be fenced
        txn.abort()
    finally:
        conn.close()


# -- connections ------------------------------------------------------------------------------------


def test_a_wrong_password_is_unavailable_and_the_message_hides_it(pg_cluster: PgCluster) -> None:
    wrong = f"postgresql://{USER}:not-the-pw-4242@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(wrong).open()
    assert "not-the-pw-4242" not in caught.value.message
    assert f"postgresql://{USER}:***@127.0.0.1:{pg_cluster.port}/postgres" in caught.value.message
    assert "password authentication failed" in caught.value.message


def test_an_unreachable_database_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        PostgresStore(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/db").open()
    assert time.monotonic() - started < 3


def _terminate_others(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        return int(row[0]) if row else 0


def test_connections_killed_while_idle_are_replaced_without_an_error(url: str, opened: PostgresStore) -> None:
    txn = opened.begin()
    txn.put("inputs", b"k", b"1")
    txn.commit()
    with opened.read() as read:
        assert read.get("inputs", b"k") == b"1"
    assert _terminate_others(url) >= 2  # the writer's connection and the idle reader's
    time.sleep(0.2)
    with opened.read() as read:  # the pooled connection is dead: replaced, no error
        assert read.get("inputs", b"k") == b"1"
    txn = opened.begin()  # the writer's too
    assert txn.get("inputs", b"k") == b"1"
    txn.put("inputs", b"k2", b"2")
    txn.commit()
    assert opened.get("inputs", b"k2") == b"2"
    assert _terminate_others(url) >= 1
    txn = opened.begin()  # no read first: its BEGIN reconnects
    txn.put("inputs", b"k3", b"3")
    txn.commit()
    assert opened.count("inputs") == 3


# -- the runtime on PostgreSQL ----------------------------------------------------------------------


def shop(runs: Counter[str]) -> list[Service | VirtualObject]:
    svc = Service("Shop")

    @svc.handler()
    async def buy(ctx: Context, item: str) -> str:
        def reserve() -> str:
            runs["reserve"] += 1
            return f"reserved {item}"

        def charge() -> str:
            runs["charge"] += 1
            return "charged"

        first: str = await ctx.run("reserve", reserve)
        await ctx.sleep(timedelta(seconds=5))
        second: str = await ctx.run("charge", charge)
        return f"{first}, {second}"

    cart = VirtualObject("Cart")

    @cart.handler()
    async def add(ctx: ObjectContext, item: str) -> list[str]:
        items: list[str] = await ctx.get("items") or []
        items.append(item)
        ctx.set("items", items)
        return items

    return [svc, cart]


@pytest.mark.anyio
async def test_an_in_process_proxy_runs_on_postgresql(start: StartHarness, url: str) -> None:
    runs: Counter[str] = Counter()
    clock = FakeClock()
    h = await start(shop(runs), store=url, clock=clock)
    runtime = h.apps.runtime
    assert runtime.lmdb is None and runtime.postgres is not None

    adds = [await h.ingress.post("/Cart/alice/add", json=item) for item in ("lamp", "desk", "chair")]
    assert [r.json() for r in adds][-1] == ["lamp", "desk", "chair"]

    headers = {"idempotency-key": "order-1"}
    inv = await h.send("/Shop/buy", "lamp", headers=headers)
    view = await h.advance_until(inv, lambda v: v["status"] == "completed", step=1.0, limit=60)
    assert runs == {"reserve": 1, "charge": 1}
    again = await h.ingress.post("/Shop/buy", json="lamp", headers=headers)
    assert again.status_code == 200 and again.headers["x-restate-id"] == inv
    assert again.json() == "reserved lamp, charged"
    assert [item["entry"]["type"] for item in view["journal"]] == ["run", "sleep", "run"]

    stats = (await h.admin.get("/stats")).json()
    assert stats["storage"]["backend"] == "postgresql" and stats["storage"]["available"] is True
    assert PASSWORD not in str(stats) and "***" in stats["storage"]["url"]
    assert stats["counts"]["invocations"] == 4 and stats["invocations"] == {"completed": 4}
    metrics = (await h.admin.get("/metrics")).text
    assert 'durable_invocations{status="completed"} 4' in metrics
    assert "durable_lmdb_" not in metrics


@pytest.mark.anyio
async def test_a_failing_write_does_not_sink_its_batch_on_postgresql(start: StartHarness, url: str) -> None:
    h = await start(shop(Counter()), store=url)
    writer = h.apps.runtime.writer

    def put(key: bytes, fail: Exception | None = None) -> Callable[[Txn], bytes]:
        def write(txn: Txn) -> bytes:
            txn.put("inputs", key, b"1")
            if fail is not None:
                raise fail
            return key

        return write

    commits = writer.commits
    release = await h.writer_blocked()
    futures = [
        asyncio.ensure_future(writer.submit(put(b"a"))),
        asyncio.ensure_future(writer.submit(put(b"b", Conflict("no")))),
        asyncio.ensure_future(writer.submit(put(b"c", ValueError("bug")))),
        asyncio.ensure_future(writer.submit(put(b"d"))),
    ]
    await h.wait_queued(4)
    await release()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == b"a" and results[3] == b"d"
    assert isinstance(results[1], Conflict) and isinstance(results[2], ValueError)
    store = h.apps.runtime.store
    assert [store.get("inputs", k) for k in (b"a", b"b", b"c", b"d")] == [b"1", None, None, b"1"]
    assert writer.commits == commits + 2  # the blocker's, then the four requests' in one
