"""Issue 7 with real processes: inspect, cancel (with compensation), kill, pause, resume, purge,
bulk actions, retention, metrics and JSON logs — and a cancel that survives SIGKILLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, HandlerProc, ProxyProc, poll

pytestmark = pytest.mark.e2e

DURABLE = "tests.handlers.durable:application"
ORDERS = "examples.orders:application"
ROUNDS = 12
HOLD_ORDER = {"order_id": "o-1", "sku": "sku-1", "quantity": 1, "amount": 12.5, "hold_seconds": 3600}


def _start(
    cluster: Cluster, app: str, services: tuple[str, ...], env: dict[str, str] | None = None
) -> tuple[HandlerProc, ProxyProc]:
    handler = cluster.handler(app)
    proxy = cluster.proxy([handler], services=services, env=env)
    return handler, proxy


def _act(proxy: ProxyProc, inv: str, action: str, query: str = "") -> tuple[int, dict[str, object]]:
    response = proxy.http.patch(f"{proxy.admin}/invocations/{inv}/{action}{query}")
    return response.status_code, response.json()


def _steps(view: dict[str, object]) -> list[tuple[str, str | None]]:
    journal = view["journal"]
    assert isinstance(journal, list)
    return [(item["entry"]["type"], item["entry"].get("name")) for item in journal]


def test_cancel_runs_the_saga_compensation(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster, ORDERS, ("OrderFulfillment",))
    inv = proxy.send("OrderFulfillment/process", HOLD_ORDER)
    view = proxy.wait_status(inv, "suspended", timeout=10)
    assert view["waiting_on"][0]["kind"] == "timer"
    status, body = _act(proxy, inv, "cancel")
    assert status == 200, body
    result = proxy.attach(inv)
    assert result.status_code == 409 and result.json()["message"] == "invocation cancelled"
    done = proxy.invocation(inv)
    assert _steps(done) == [
        ("run", "reserve"), ("run", "charge"), ("sleep", None), ("cancel", None), ("run", "refund"),
        ("run", "release"),
    ]  # fmt: skip
    assert _act(proxy, inv, "cancel")[0] == 409  # already completed


def test_cancel_survives_handler_and_proxy_kills(cluster: Cluster) -> None:
    handler, proxy = _start(cluster, ORDERS, ("OrderFulfillment",))
    inv = proxy.send("OrderFulfillment/process", HOLD_ORDER)
    proxy.wait_status(inv, "suspended", timeout=10)
    handler.kill()
    assert _act(proxy, inv, "cancel")[0] == 200
    proxy.wait_status(inv, "backing-off", timeout=10)  # the cancelled attempt cannot reach the handler
    proxy.kill()
    handler.start()
    handler.wait_ready()
    proxy.restart(services=("OrderFulfillment",))
    done = proxy.wait_status(inv, "completed", timeout=30)
    assert done["failure"]["code"] == 409
    names = [name for _, name in _steps(done)]
    assert names.count("refund") == 1 and names.count("release") == 1


def test_a_hold_that_ends_during_the_compensation_does_not_change_the_replay(cluster: Cluster) -> None:
    """Cancelled during a 2 s hold, the handler is SIGKILLed in its second compensation step; the
    hold's timer fires while it is down. The retry must still raise the cancellation at the hold
    (where the journal's cancel entry says it was raised), not go past it, so the replay matches
    the journaled compensation and every step runs once (plus the one the crash interrupted)."""
    handler = cluster.handler(env={"HANDLER_FAULTS": "step3.before_body"})
    proxy = cluster.proxy([handler])
    inv = proxy.send("Ledger/held", {"sleep": 2.0, "steps": 2})
    proxy.wait_status(inv, "suspended", timeout=10)
    assert _act(proxy, inv, "cancel")[0] == 200
    cluster.ledger.wait_for(inv, 3, "start")  # killed right after this line
    poll(lambda: not handler.alive, 10, message="the handler killed itself in step 3")

    def hold_fired() -> bool:
        sleep = next(item["entry"] for item in proxy.invocation(inv)["journal"] if item["entry"]["type"] == "sleep")
        return bool(sleep.get("completed"))

    poll(hold_fired, 10, message="the hold's timer fired while the handler was down")
    handler.start()
    handler.wait_ready()
    done = proxy.wait_status(inv, "completed", timeout=30)
    assert done["failure"] == {"code": 409, "message": "invocation cancelled"}, done
    assert [t for t, _ in _steps(done)] == ["run", "sleep", "cancel", "run", "run"]
    cluster.ledger.check_journal(inv, done["journal"])
    cluster.ledger.check_extra_starts(inv, crashes=1)
    assert cluster.ledger.start_counts(inv) == {0: 1, 2: 1, 3: 2}  # step 1 ("ship") never ran


def test_kill_stops_at_once_and_takes_the_child_with_it(cluster: Cluster) -> None:
    handler = cluster.handler(DURABLE, env={"DURABLE_CHILD_SLEEP": "30"})
    proxy = cluster.proxy([handler], services=("Caller", "Child"))
    inv = proxy.send("Caller/call_child", 3)
    parent = proxy.wait_status(inv, "suspended", timeout=10)
    child = parent["waiting_on"][0]["invocation_id"]
    assert parent["waiting_on"][0]["kind"] == "call"
    status, body = _act(proxy, inv, "kill")
    assert status == 200 and body["status"] == "completed"
    killed = proxy.attach(inv)
    assert killed.status_code == 409 and killed.json()["message"] == "invocation killed"
    assert proxy.invocation(child)["status"] == "completed"
    assert proxy.invocation(child)["failure"]["code"] == 409
    # No handler code ran after the kill: the parent's journal ends at the call, and its step
    # after the call never started (the killed child did not resume it either).
    assert [t for t, _ in _steps(proxy.invocation(inv))] == ["run", "call"]
    # Nothing is left that could run it: no attempt in flight, and a completed invocation is never
    # started again (the machine refuses a new attempt of it; tests/unit/machine).
    assert proxy.stats()["running_attempts"] == 0
    assert cluster.ledger.start_counts(inv) == {0: 1}


def test_cancel_a_caller_whose_child_waits_in_a_queue(cluster: Cluster) -> None:
    handler = cluster.handler(DURABLE, env={"DURABLE_QUEUE_SLEEP": "3"})
    proxy = cluster.proxy([handler], services=("Caller", "Queue"))
    busy = proxy.send("Queue/q/push", 0)
    cluster.ledger.wait_for(busy, 0, "start", timeout=10)
    inv = proxy.send("Caller/call_queue", 1)
    parent = proxy.wait_status(inv, "suspended", timeout=10)
    child = parent["waiting_on"][0]["invocation_id"]
    assert proxy.invocation(child)["status"] == "pending"
    assert _act(proxy, inv, "cancel")[0] == 200
    # The pending child is cancelled (completed) and the parent gets exactly one current attempt,
    # which ends with the cancellation.
    done = proxy.wait_status(inv, "completed", timeout=15)
    assert done["failure"]["code"] == 409
    assert proxy.invocation(child)["failure"]["code"] == 409
    assert proxy.wait_status(busy, "completed", timeout=15)["result"] == [0]
    assert 1 not in cluster.ledger.start_counts(child)


def test_pause_resume_purge(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster, DURABLE, ("Sleeper",))
    inv = proxy.send("Sleeper/nap", {"seconds": 0.5})
    proxy.wait_status(inv, "suspended", timeout=10)
    status, body = _act(proxy, inv, "pause")
    assert status == 200 and body["status"] == "paused"
    # The timer fires while paused (its entry completes): the invocation must stay paused.
    fired = poll(
        lambda: next(
            (
                v
                for v in [proxy.invocation(inv)]
                if any(i["entry"]["type"] == "sleep" and i["entry"].get("completed") for i in v["journal"])
            ),
            None,
        ),
        timeout=10,
        message="the paused invocation's timer to fire",
    )
    assert fired["status"] == "paused"
    assert proxy.invocation(inv)["status"] == "paused"
    assert _act(proxy, inv, "purge")[0] == 409  # not completed
    status, body = _act(proxy, inv, "resume", "?deployment=latest")
    assert status == 200
    done = proxy.wait_status(inv, "completed", timeout=10)
    assert done["retry_count"] == 0
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    status, body = _act(proxy, inv, "purge")
    assert status == 200 and body == {"id": inv, "status": "purged"}
    assert proxy.http.get(f"{proxy.admin}/invocations/{inv}").status_code == 404
    assert proxy.output(inv).status_code == 404
    assert proxy.counts()["journal"] == 0
    assert _act(proxy, "inv_unknown", "kill")[0] == 404
    assert _act(proxy, inv, "explode")[0] == 404


def test_list_paging_and_bulk_cancel(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster, DURABLE, ("Sleeper", "Counter"))
    naps = [proxy.send("Sleeper/nap", {"seconds": 3600, "ledger": False}) for _ in range(5)]
    for inv in naps:
        proxy.wait_status(inv, "suspended", timeout=10)
    assert proxy.call("Counter/c/add", 1).status_code == 200
    first = proxy.http.get(f"{proxy.admin}/invocations", params={"status": "suspended", "limit": 3}).json()
    assert len(first["invocations"]) == 3 and first["next"]
    second = proxy.http.get(
        f"{proxy.admin}/invocations", params={"status": "suspended", "limit": 3, "after": first["next"]}
    ).json()
    assert second["next"] is None
    listed = [v["id"] for v in first["invocations"] + second["invocations"]]
    assert sorted(listed) == sorted(naps)
    by_service = proxy.http.get(f"{proxy.admin}/invocations", params={"service": "Counter"}).json()
    assert [v["service"] for v in by_service["invocations"]] == ["Counter"]
    assert proxy.http.get(f"{proxy.admin}/invocations", params={"status": "bogus"}).status_code == 400

    bulk = proxy.http.post(f"{proxy.admin}/invocations/bulk/cancel", params={"service": "Sleeper"}).json()
    assert bulk["count"] == 5 and sorted(bulk["ids"]) == sorted(naps)
    for inv in naps:
        assert proxy.wait_status(inv, "completed", timeout=10)["failure"]["code"] == 409
    assert proxy.http.post(f"{proxy.admin}/invocations/bulk/kill").status_code == 400
    stats = proxy.stats()
    assert stats["invocations"]["completed"] == 6


def test_retention_purges_and_the_file_stops_growing(cluster: Cluster) -> None:
    env = {"PROXY_RETENTION": "1s", "PROXY_SWEEP_INTERVAL": "300ms", "PROXY_LOG_LEVEL": "warning"}
    _handler, proxy = _start(cluster, DURABLE, ("Counter",), env=env)
    first = proxy.call("Counter/k/add", 1, key="same-key")
    assert first.status_code == 200
    first_id = first.headers["x-restate-id"]
    poll(lambda: proxy.output(first_id).status_code == 404, 10, message="purged after retention")
    again = proxy.call("Counter/k/add", 1, key="same-key")
    assert again.headers["x-restate-id"] != first_id, "an expired idempotency key starts a new invocation"

    data_file = Path(proxy.data_dir) / "lmdb" / "data.mdb"
    sizes = []
    for round_ in range(ROUNDS):
        for i in range(150):
            assert proxy.call(f"Counter/k{i % 10}/add", 1, key=f"r{round_}-{i}").status_code == 200
        poll(lambda: proxy.counts()["invocations"] <= 20, 30, interval=0.1, message="sweeper caught up")
        sizes.append(data_file.stat().st_size)
    print(f"data.mdb size after each round: {sizes}")
    # Freed pages are reused once no reader holds them, so after a few rounds the size plateaus.
    # Without the sweeper each round adds its ~150 invocations for good (~200 KB a round, measured, so
    # more than 1 MB over the last six); allow 16 pages of slack for a reader pinning a snapshot
    # on a busy machine.
    assert sizes[-1] <= sizes[ROUNDS // 2] + 16 * 4096, f"the LMDB file kept growing under a steady load: {sizes}"
    assert proxy.stats()["purged"] >= 900


def test_metrics_and_json_logs(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster, DURABLE, ("Counter", "Sleeper"))
    assert proxy.call("Counter/m/add", 2).status_code == 200
    inv = proxy.send("Sleeper/nap", {"seconds": 3600, "ledger": False})
    proxy.wait_status(inv, "suspended", timeout=10)
    text = proxy.http.get(f"{proxy.admin}/metrics").text
    assert 'durable_invocations{status="completed"} 1' in text
    assert 'durable_invocations{status="suspended"} 1' in text
    assert "durable_commit_seconds_count" in text and "durable_commit_batch_size_bucket" in text
    assert "durable_step_ack_seconds_count" in text
    assert 'durable_attempts_total{outcome="completed"}' in text
    assert "durable_lmdb_used_bytes" in text
    lines = [json.loads(line) for line in proxy.log_path.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
