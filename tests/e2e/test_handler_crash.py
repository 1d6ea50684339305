"""Issue 2 (a): SIGKILL the handler during step k of a 10-step invocation, restart it, and the
invocation completes; steps before k never ran twice, the in-flight step ran at most twice."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.e2e

STEPS = 10


def _check_completed(
    cluster: Cluster, proxy_view: dict[str, Any], result: dict[str, Any], crash_step: int, crashes: int = 1
) -> None:
    inv = proxy_view["id"]
    journal = proxy_view["journal"]
    assert [item["index"] for item in journal] == list(range(STEPS))
    assert [item["entry"]["name"] for item in journal] == [f"step{i}" for i in range(STEPS)]
    # The result is built from the journaled values, not from any re-executed step.
    assert result["nonces"] == [item["entry"]["value"]["nonce"] for item in journal]
    ledger = cluster.ledger
    counts = ledger.start_counts(inv)
    for idx in range(STEPS):
        if idx == crash_step:
            assert counts[idx] <= 2, f"in-flight step {idx} started {counts[idx]} times"
        else:
            assert counts[idx] == 1, f"step {idx} started {counts[idx]} times: {counts}"
    ledger.check_journal(inv, journal)
    ledger.check_extra_starts(inv, crashes=crashes, steps=STEPS)


@pytest.mark.parametrize(
    ("step", "point"),
    [(0, "after_body"), (4, "before_body"), (5, "before_start"), (9, "after_body")],
)
def test_handler_self_kill_at_step_completes_without_rerunning_acked_steps(
    cluster: Cluster, step: int, point: str
) -> None:
    handler = cluster.handler(env={"HANDLER_FAULTS": f"step{step}.{point}"})
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/run", {"steps": STEPS, "sleep": 0.01})

    assert handler.wait(20) == -signal.SIGKILL
    started = cluster.ledger.start_counts(inv)
    if point == "before_start":
        assert max(started) == step - 1, started  # step k never began
    else:
        assert max(started) == step, started
    handler.start()
    handler.wait_ready()

    response = proxy.attach(inv)
    assert response.status_code == 200, response.text
    view = proxy.invocation(inv)
    assert view["status"] == "completed"
    assert view["retry_count"] >= 1  # the crash was seen as a failed attempt and retried
    _check_completed(cluster, view, response.json(), crash_step=step)
    if point == "after_body":
        # The killed execution finished its body but its result never reached the journal.
        ends = cluster.ledger.ends(inv, step)
        assert len(ends) == 2 and view["journal"][step]["entry"]["value"]["nonce"] == ends[1].nonce


def test_external_sigkill_during_slow_step(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/run", {"steps": STEPS, "sleep": 0.01, "slow_step": 6, "slow_sleep": 30, "slow_once": True})

    cluster.ledger.wait_for(inv, 6, "start")
    journal_before = proxy.invocation(inv)["journal"]
    assert len(journal_before) == 6
    handler.kill()
    handler.start()
    handler.wait_ready()

    response = proxy.attach(inv)
    assert response.status_code == 200, response.text
    view = proxy.invocation(inv)
    assert view["journal"][:6] == journal_before  # acknowledged entries are unchanged
    _check_completed(cluster, view, response.json(), crash_step=6)
    # The killed execution of step 6 never ended; the one that ended ran in the new process.
    starts, ends = cluster.ledger.starts(inv, 6), cluster.ledger.ends(inv, 6)
    assert len(starts) == 2 and len(ends) == 1
    assert ends[0].nonce == starts[1].nonce and starts[0].pid != starts[1].pid
