"""Issue 2 (d): a suspend-mode handler (no step acks; each new step ends the request and the proxy
re-invokes with the longer journal) completes a multi-step invocation and survives a handler kill."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.e2e

APP = "tests.handlers.ledger:suspend_application"
STEPS = 6


def test_suspend_mode_completes_one_attempt_per_step(cluster: Cluster) -> None:
    handler = cluster.handler(APP)
    proxy = cluster.proxy([handler])
    assert proxy.http.get(f"{proxy.admin}/deployments").json()["deployments"][0]["mode"] == "suspend"
    response = proxy.call("Ledger/run", {"steps": STEPS})
    assert response.status_code == 200, response.text
    inv = response.headers["x-restate-id"]
    view = proxy.invocation(inv)
    assert response.json()["nonces"] == [item["entry"]["value"]["nonce"] for item in view["journal"]]
    # One attempt per new step plus the one that completes; none of them counted as a failure.
    assert view["attempt"] == STEPS + 1
    assert view["retry_count"] == 0
    assert cluster.ledger.start_counts(inv) == dict.fromkeys(range(STEPS), 1)
    cluster.ledger.check_journal(inv, view["journal"])


@pytest.mark.parametrize("point", ["before_body", "after_body"])
def test_suspend_mode_survives_a_handler_kill(cluster: Cluster, point: str) -> None:
    handler = cluster.handler(APP, env={"HANDLER_FAULTS": f"step3.{point}"})
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/run", {"steps": STEPS})
    assert handler.wait(20) == -signal.SIGKILL
    journal_before = proxy.invocation(inv)["journal"]
    assert [item["index"] for item in journal_before] == [0, 1, 2]
    handler.start()
    handler.wait_ready()

    response = proxy.attach(inv)
    assert response.status_code == 200, response.text
    view = proxy.invocation(inv)
    assert view["journal"][:3] == journal_before
    assert response.json()["nonces"] == [item["entry"]["value"]["nonce"] for item in view["journal"]]
    counts = cluster.ledger.start_counts(inv)
    assert counts == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    cluster.ledger.check_journal(inv, view["journal"])
    cluster.ledger.check_extra_starts(inv, crashes=1, steps=STEPS)
