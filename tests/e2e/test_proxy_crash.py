"""Issue 2 (b): SIGKILL the proxy mid-invocation and restart it on the same data dir: the invocation
resumes by itself, acknowledged results survive unchanged, and clients can re-attach. Also the
stale side of it: the old attempt's late ack after the restart is fenced."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.e2e.harness import Cluster, poll

pytestmark = pytest.mark.e2e

STEPS = 10


def test_proxy_sigkill_mid_invocation_resumes_by_itself(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    job = {"steps": STEPS, "sleep": 0.15}
    sent = proxy.send("Ledger/run", job)
    # A second invocation with a client waiting on the call when the proxy dies.
    outcome: dict[str, object] = {}

    def blocking_call() -> None:
        try:
            outcome["response"] = proxy.call("Ledger/run", {**job, "tag": "called"}, key="call-1", timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=blocking_call)
    thread.start()
    poll(lambda: len(proxy.invocation(sent)["journal"]) >= 4, 20, message="4 steps journaled")
    acked = proxy.invocation(sent)["journal"]
    called = poll(lambda: next((i for i in cluster.ledger.invocations() if i != sent), None), 10)
    proxy.kill()
    thread.join(10)
    assert "error" in outcome, "the waiting client must see the connection fail"

    # Nobody calls or attaches: the invocations must finish on their own after the restart.
    proxy.restart(services=["Ledger"])
    done = proxy.wait_status(sent, "completed", timeout=30)
    assert done["journal"][: len(acked)] == acked, "acknowledged journal entries changed"
    assert len(done["journal"]) == STEPS
    proxy.wait_status(called, "completed", timeout=30)

    attached = proxy.attach(sent)
    assert attached.status_code == 200
    assert attached.json()["nonces"] == [item["entry"]["value"]["nonce"] for item in done["journal"]]
    # The client that lost its connection gets the same invocation's result with its idempotency key.
    again = proxy.call("Ledger/run", {**job, "tag": "called"}, key="call-1")
    assert again.status_code == 200 and again.headers["x-restate-id"] == called
    assert again.json()["tag"] == "called"
    counts = cluster.ledger.start_counts(sent)
    assert all(counts[idx] == 1 for idx in range(len(acked))), f"an acknowledged step re-ran: {counts}"
    for inv in (sent, called):
        view = proxy.invocation(inv)
        cluster.ledger.check_journal(inv, view["journal"])
        cluster.ledger.check_extra_starts(inv, crashes=1, steps=STEPS)
    assert cluster.ledger.ends(sent, len(acked) - 1)  # sanity: the acked steps did run
    assert handler.alive and handler.starts == 1  # the handler was never restarted


def test_old_attempts_late_ack_after_proxy_restart_is_fenced(cluster: Cluster) -> None:
    """Failure matrix #5: the handler keeps running a slow step while the proxy restarts; its ack
    arrives at the new proxy, which must refuse it (409) and keep the new attempt's result."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/run", {"steps": 4, "slow_step": 2, "slow_sleep": 2.5})
    first = cluster.ledger.wait_for(inv, 2, "start")
    before = proxy.invocation(inv)
    assert len(before["journal"]) == 2
    proxy.kill()
    proxy.restart(services=["Ledger"])

    done = proxy.wait_status(inv, "completed", timeout=30)
    assert done["attempt"] > before["attempt"]
    starts = cluster.ledger.starts(inv, 2)
    assert len(starts) == 2 and starts[0].nonce == first.nonce
    # The old attempt's step did finish (its ack was sent) ...
    poll(lambda: len(cluster.ledger.ends(inv, 2)) == 2, 10, message="the old execution of step 2 to end")
    ends = cluster.ledger.ends(inv, 2)
    assert {e.nonce for e in ends} == {s.nonce for s in starts}
    # ... but the journal holds the new attempt's value: the late ack was fenced.
    assert done["journal"][2]["entry"]["value"]["nonce"] == starts[1].nonce
    assert done["journal"][:2] == before["journal"]
    cluster.ledger.check_journal(inv, done["journal"])
    after = proxy.invocation(inv)
    assert after["journal"] == done["journal"]
