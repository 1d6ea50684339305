"""Issue 2 (e): handler code that no longer matches the journal (a step renamed between attempts)
pauses the invocation with code 570, visible in the admin API, and leaves the journal intact."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import Cluster, poll

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("app", ["tests.handlers.ledger:application", "tests.handlers.ledger:suspend_application"])
def test_renamed_step_pauses_with_570(cluster: Cluster, app: str) -> None:
    handler = cluster.handler(app, env={"HANDLER_FAULTS": "step3.after_body"})
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/run", {"steps": 6})
    assert handler.wait(20) == -signal.SIGKILL
    journal = proxy.invocation(inv)["journal"]
    assert [item["entry"]["name"] for item in journal] == ["step0", "step1", "step2"]

    # "Deploy" new code that names its steps differently, on the same URL.
    handler.start({"LEDGER_STEP_PREFIX": "renamed"})
    handler.wait_ready()
    view = proxy.wait_status(inv, "paused", timeout=20)
    failure = view["last_failure"]
    assert failure["code"] == 570, failure
    assert "index 0" in failure["message"]
    assert 'run "step0"' in failure["message"] and 'run "renamed0"' in failure["message"]
    assert view["journal"] == journal
    assert proxy.output(inv).status_code == 470
    # Every attempt but the last either suspended after a new step (suspend mode) or failed (killed,
    # or refused while the handler was down); the last one hit the mismatch and paused at once
    # instead of being retried. Nothing re-ran.
    suspends = len(journal) if "suspend" in app else 0
    assert view["attempt"] == suspends + view["retry_count"] + 1, view
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1, 2: 1, 3: 1}
    with pytest.raises(AssertionError):
        poll(lambda: proxy.invocation(inv)["status"] != "paused", 1.0)

    # Roll the code back and resume: the intact journal replays and the invocation completes.
    handler.kill()
    handler.start({"LEDGER_STEP_PREFIX": "step"})
    handler.wait_ready()
    resumed = proxy.http.patch(f"{proxy.admin}/invocations/{inv}/resume")
    assert resumed.status_code == 200, resumed.text
    result = proxy.attach(inv)
    assert result.status_code == 200, result.text
    done = proxy.invocation(inv)
    assert done["journal"][:3] == journal
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    cluster.ledger.check_journal(inv, done["journal"])
