"""Issue 12, step 1: the proxy on PostgreSQL (``--store postgresql://...``), real processes.

A proxy started with ``PROXY_STORE`` on a fresh database of the session's private cluster
(`tests.postgres`) and the ledger handler: steps, an idempotency key and a durable sleep across a
SIGKILL of the proxy (every acknowledged result unchanged, no committed step run again, the
timer fired once); and PostgreSQL stopped under a running proxy: 503 at once on ingress and
admin reads, no crash, and everything resumes by itself once the database is back. The password
in the URL never reaches the proxy's log or an answer.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.harness import Cluster, HandlerProc, ProxyProc, poll
from tests.postgres import PASSWORD, PgCluster, pg_cluster, wait_accepting

__all__ = ["pg_cluster"]

pytestmark = pytest.mark.e2e

STEPS = 10


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database (the proxy creates its schema at start)."""
    return pg_cluster.fresh_database("e2e")


def _start(cluster: Cluster, url: str) -> tuple[HandlerProc, ProxyProc]:
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_STORE": url})
    return handler, proxy


def _assert_no_secret(proxy: ProxyProc) -> None:
    log = proxy.log_path.read_text(errors="replace")
    assert PASSWORD not in log, "the PostgreSQL password reached the proxy's log"
    stats = proxy.http.get(f"{proxy.admin}/stats", timeout=5).text
    assert PASSWORD not in stats


def test_sigkill_mid_invocation_on_postgresql(cluster: Cluster, pg_url: str) -> None:
    handler, proxy = _start(cluster, pg_url)
    storage = proxy.stats()["storage"]
    assert storage["backend"] == "postgresql" and storage["schema_version"] >= 1
    assert storage["url"] == pg_url.replace(PASSWORD, "***")
    assert not (proxy.data_dir / "lmdb").exists(), "nothing of LMDB is opened on PostgreSQL"

    before = proxy.call("Ledger/run", {"steps": 3, "tag": "before"}, key="before-1")
    assert before.status_code == 200, before.text
    job = {"steps": STEPS, "sleep": 0.15}
    sent = proxy.send("Ledger/run", job)
    sleepy_at = time.monotonic()
    sleepy = proxy.send("Ledger/sleepy", {"sleep": 2.0})
    outcome: dict[str, object] = {}

    def blocking_call() -> None:
        try:
            outcome["response"] = proxy.call("Ledger/run", {**job, "tag": "called"}, key="call-1", timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=blocking_call)
    thread.start()
    napping = proxy.wait_status(sleepy, "suspended", timeout=20)
    assert [item["entry"]["type"] for item in napping["journal"]] == ["run", "sleep"]
    poll(lambda: len(proxy.invocation(sent)["journal"]) >= 4, 20, message="4 steps journaled")
    known = {sent, sleepy, before.headers["x-restate-id"]}
    called = poll(lambda: next((i for i in cluster.ledger.invocations() if i not in known), None), 10)
    acked = proxy.invocation(sent)["journal"]
    proxy.kill()
    thread.join(10)
    assert "error" in outcome, "the waiting client must see the connection fail"

    proxy.restart(services=["Ledger"])
    done = proxy.wait_status(sent, "completed", timeout=30)
    assert done["journal"][: len(acked)] == acked, "acknowledged journal entries changed"
    assert len(done["journal"]) == STEPS
    proxy.wait_status(called, "completed", timeout=30)
    slept = proxy.wait_status(sleepy, "completed", timeout=30)
    wake_at = slept["journal"][1]["entry"]["wake_at_ms"]
    assert slept["journal"][1]["entry"]["completed"] is True and slept["completed_ms"] >= wake_at
    assert time.monotonic() - sleepy_at >= 2.0

    # Idempotency keys find the same invocations and results after the crash.
    again = proxy.call("Ledger/run", {**job, "tag": "called"}, key="call-1")
    assert again.status_code == 200 and again.headers["x-restate-id"] == called
    assert again.json()["tag"] == "called"
    repeat = proxy.call("Ledger/run", {"steps": 3, "tag": "before"}, key="before-1")
    assert repeat.headers["x-restate-id"] == before.headers["x-restate-id"] and repeat.content == before.content
    attached = proxy.attach(sent)
    assert attached.json()["nonces"] == [item["entry"]["value"]["nonce"] for item in done["journal"]]

    counts = cluster.ledger.start_counts(sent)
    assert all(counts[idx] == 1 for idx in range(len(acked))), f"an acknowledged step re-ran: {counts}"
    assert cluster.ledger.start_counts(sleepy) == {0: 1, 1: 1}, "the timer fired more than once"
    for inv in (sent, called):
        cluster.ledger.check_journal(inv, proxy.invocation(inv)["journal"])
        cluster.ledger.check_extra_starts(inv, crashes=1, steps=STEPS)
    cluster.ledger.check_journal(sleepy, slept["journal"])
    assert handler.alive and handler.starts == 1
    _assert_no_secret(proxy)


def test_database_down_gives_503_and_the_proxy_recovers(cluster: Cluster, pg_cluster: PgCluster, pg_url: str) -> None:
    _handler, proxy = _start(cluster, pg_url)
    ok = proxy.call("Ledger/run", {"steps": 2, "tag": "ok"})
    assert ok.status_code == 200, ok.text
    ok_id = ok.headers["x-restate-id"]
    slow = proxy.send("Ledger/run", {"steps": 6, "sleep": 0.3})
    poll(lambda: len(proxy.invocation(slow)["journal"]) >= 2, 20, message="2 steps journaled")

    pg_cluster.stop()
    try:
        started = time.monotonic()
        refused = proxy.call("Ledger/run", {"steps": 1}, timeout=10)
        assert time.monotonic() - started < 5, "a 503 must come at once, not after a hang"
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"] == "unavailable" and "PostgreSQL" in body["message"]
        assert PASSWORD not in refused.text
        sent = proxy.http.post(
            f"{proxy.ingress}/Ledger/run/send", content=b"{}", headers={"content-type": "application/json"}
        )
        assert sent.status_code == 503
        read = proxy.http.get(f"{proxy.admin}/invocations/{ok_id}", timeout=5)
        assert read.status_code == 503 and PASSWORD not in read.text
        time.sleep(1.0)  # the slow invocation's acks and retries fail meanwhile
        assert proxy.alive, "the proxy must not exit while the database is down"
    finally:
        pg_cluster.start()
        wait_accepting(pg_cluster)
    back = time.monotonic()

    def call_succeeds() -> bool:
        return proxy.call("Ledger/run", {"steps": 1, "tag": "after"}, timeout=10).status_code == 200

    poll(call_succeeds, 15, interval=0.1, message="a call to succeed once PostgreSQL is back")
    recovery = time.monotonic() - back
    assert recovery < 10, f"recovered only after {recovery:.1f}s"
    done = proxy.wait_status(slow, "completed", timeout=60)
    assert len(done["journal"]) == 6
    cluster.ledger.check_journal(slow, done["journal"])
    cluster.ledger.check_extra_starts(slow, crashes=1, steps=6)
    assert proxy.invocation(ok_id)["status"] == "completed"
    assert proxy.attach(ok_id).json()["tag"] == "ok"
    assert proxy.alive and proxy.starts == 1
    _assert_no_secret(proxy)


def test_two_proxies_starting_together_migrate_once_and_share_the_partitions(cluster: Cluster, pg_url: str) -> None:
    """Two proxies started at once on a fresh database: the schema is created exactly once (the
    migration's advisory lock), both serve, and they split the partitions between them; once one
    stops (SIGTERM hands its leases back), the other owns them all and still serves."""
    handler = cluster.handler()
    proxies = [
        cluster.proxy([handler], env={"PROXY_STORE": pg_url}, name=name, start=False) for name in ("first", "second")
    ]
    for proxy in proxies:
        proxy.start()
    for proxy in proxies:
        proxy.wait_ready(["Ledger"])

    def owned(proxy: ProxyProc) -> set[int]:
        view = proxy.http.get(f"{proxy.admin}/cluster", timeout=5).json()
        return {lease["partition"] for lease in view["owned"]}

    def split() -> bool:
        first, second = owned(proxies[0]), owned(proxies[1])
        return bool(first) and bool(second) and not first & second and len(first | second) == 16

    poll(split, 20, message="the two proxies to split the 16 partitions")
    for proxy in proxies:
        response = proxy.call("Ledger/run", {"steps": 2})
        assert response.status_code == 200, response.text
    logs = "".join(p.log_path.read_text() for p in proxies)
    assert logs.count("migrated to version 1") == 1, "the schema must be created exactly once"
    for proxy in proxies:
        assert PASSWORD not in proxy.log_path.read_text()

    proxies[0].terminate()
    poll(lambda: len(owned(proxies[1])) == 16, 10, message="the survivor to own every partition")
    assert proxies[1].call("Ledger/run", {"steps": 1}).status_code == 200
    _assert_no_secret(proxies[1])
