"""Issue 4: virtual objects and workflows with real processes and SIGKILL.

No lost update under 64 concurrent increments; a queue of exclusive calls survives the proxy
and the handler being killed, every call running once and in order; a workflow's promise
resolved while the proxy was down reaches the run after the restart.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from tests.e2e.harness import Cluster, HandlerProc, ProxyProc, poll

pytestmark = pytest.mark.e2e

APP = "tests.handlers.durable:application"
SERVICES = ("Counter", "Queue", "Signup")


def _start(cluster: Cluster, handler_env: dict[str, str] | None = None) -> tuple[HandlerProc, ProxyProc]:
    handler = cluster.handler(APP, env=handler_env)
    proxy = cluster.proxy([handler], services=SERVICES)
    return handler, proxy


def test_64_concurrent_increments_lose_nothing(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)

    async def increments() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=proxy.ingress, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/Counter/hits/add", content=b"1", headers={"content-type": "application/json"})
                    for _ in range(64)
                )
            )

    responses = asyncio.run(increments())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    # Exclusive handlers ran one at a time: every intermediate count was seen exactly once.
    assert sorted(r.json() for r in responses) == list(range(1, 65))
    assert proxy.call("Counter/hits/get").json() == 64
    state = proxy.http.get(f"{proxy.admin}/services/Counter/state/hits").json()
    assert state["state"] == {"count": 64}
    # Another key is independent.
    assert proxy.call("Counter/other/get").json() == 0


def test_queue_of_exclusive_calls_survives_proxy_and_handler_kills(cluster: Cluster) -> None:
    handler, proxy = _start(cluster, {"DURABLE_QUEUE_SLEEP": "0.3"})
    ids = [proxy.send("Queue/q/push", item) for item in range(6)]
    views = [proxy.invocation(inv) for inv in ids]
    assert views[0]["status"] == "running"
    assert all(v["status"] == "pending" for v in views[2:])
    # Kill the handler during item 1's step and the proxy during item 2's.
    cluster.ledger.wait_for(ids[1], 1, "start", timeout=15)
    handler.kill()
    handler.start()
    handler.wait_ready()
    cluster.ledger.wait_for(ids[2], 2, "start", timeout=20)
    proxy.kill()
    proxy.restart(services=SERVICES)
    for inv in ids:
        proxy.wait_status(inv, "completed", timeout=30)
    assert proxy.call("Queue/q/items").json() == [0, 1, 2, 3, 4, 5]
    results = [proxy.invocation(inv)["result"] for inv in ids]
    assert results == [list(range(i + 1)) for i in range(6)], "each call saw exactly the calls before it"
    # In order: no step of item i+1 started before item i's last step ended.
    lines = cluster.ledger.lines()
    for earlier, later in itertools.pairwise(ids):
        last_end = max(ln.pos for ln in lines if ln.inv == earlier and ln.kind == "end")
        first_start = min(ln.pos for ln in lines if ln.inv == later and ln.kind == "start")
        assert last_end < first_start, f"{later} started before {earlier} ended"
    # Exactly once per committed step; the two killed steps at most twice.
    for item, inv in enumerate(ids):
        count = cluster.ledger.start_counts(inv)[item]
        assert count == 1 or (item in (1, 2) and count == 2), (item, count)
        cluster.ledger.check_journal(inv, proxy.invocation(inv)["journal"])


def test_workflow_promise_resolved_while_the_proxy_is_down(cluster: Cluster) -> None:
    handler, proxy = _start(cluster)
    run = proxy.send("Signup/u-1/run", "ada@example.com")
    proxy.wait_status(run, "suspended", timeout=15)
    assert proxy.call("Signup/u-1/status").json() == "waiting"
    again = proxy.call("Signup/u-1/run/send", "other@example.com")
    assert again.status_code == 202 and again.json() == {"invocationId": run, "status": "PreviouslyAccepted"}
    output = proxy.http.get(f"{proxy.ingress}/restate/workflow/Signup/u-1/output")
    assert output.status_code == 470

    # The click is accepted (durable) while the handler is down, then the proxy dies too.
    handler.kill()
    click = proxy.send("Signup/u-1/click", "s3cret")
    proxy.kill()
    handler.start()
    handler.wait_ready()
    proxy.restart(services=SERVICES)
    proxy.wait_status(click, "completed", timeout=20)
    done = proxy.wait_status(run, "completed", timeout=20)
    assert done["result"] == "ada@example.com:s3cret"
    attached = proxy.http.get(f"{proxy.ingress}/restate/workflow/Signup/u-1/attach", timeout=10)
    assert attached.status_code == 200 and attached.json() == "ada@example.com:s3cret"
    assert proxy.call("Signup/u-1/status").json() == "done"
    # A second resolution of the same promise is a terminal 409 for that handler.
    second = proxy.call("Signup/u-1/click", "again")
    assert second.status_code == 409
    # The proxy completed the resolution when journaling it and said so in the ack: the handler
    # learned the 409 without suspending (one attempt).
    assert proxy.invocation(second.headers["x-restate-id"])["attempt"] == 1
    assert cluster.ledger.start_counts(run) == {0: 1}


def test_admin_can_edit_object_state(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    assert proxy.call("Counter/fix/add", 5).json() == 5
    edit = proxy.http.post(
        f"{proxy.admin}/services/Counter/state",
        content=json.dumps({"object_key": "fix", "new_state": {"count": 100}}),
    )
    assert edit.status_code == 202
    assert proxy.call("Counter/fix/add", 1).json() == 101
    bad = proxy.http.post(f"{proxy.admin}/services/Counter/state", content=b"{}")
    assert bad.status_code == 400
    poll(lambda: proxy.call("Counter/fix/get").json() == 101, 5)


def test_a_killed_then_purged_workflow_leaves_nothing_behind(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    run = proxy.send("Signup/u-9/run", "x@example.com")
    proxy.wait_status(run, "suspended", timeout=15)
    assert proxy.counts()["promise_waiters"] == 1
    assert proxy.http.patch(f"{proxy.admin}/invocations/{run}/kill").status_code == 200
    assert proxy.counts()["promise_waiters"] == 0
    assert proxy.http.patch(f"{proxy.admin}/invocations/{run}/purge").status_code == 200
    counts = proxy.counts()
    assert (counts["state"], counts["workflows"], counts["journal"]) == (0, 0, 0)
    # The key is free again: a new run starts.
    again = proxy.call("Signup/u-9/run/send", "y@example.com")
    assert again.json()["status"] == "Accepted"
