"""Issue 3: suspension points survive SIGKILL of the proxy and of the handler at any moment.

Durable timers (fire late, once, after a restart), calls between services (the child is started
once, its result reaches the suspended caller), awakeables with a timeout via `select`, delayed
sends, deterministic helpers, and a dormant invocation costing no memory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Cluster, HandlerProc, ProxyProc, poll

pytestmark = pytest.mark.e2e

APP = "tests.handlers.durable:application"
SERVICES = ("Sleeper", "Caller", "Child", "Approver")


def _start(cluster: Cluster, env: dict[str, str] | None = None, app: str = APP) -> tuple[HandlerProc, ProxyProc]:
    handler = cluster.handler(app, env={"DURABLE_CHILD_SLEEP": "1.0"})
    proxy = cluster.proxy([handler], services=SERVICES, env=env)
    return handler, proxy


@pytest.mark.parametrize("app", [APP, "tests.handlers.durable:suspend_application"], ids=["ack", "suspend"])
def test_sleep_survives_proxy_kill_and_fires_late_once(cluster: Cluster, app: str) -> None:
    _handler, proxy = _start(cluster, app=app)
    inv = proxy.send("Sleeper/nap", {"seconds": 1.5})
    view = proxy.wait_status(inv, "suspended", timeout=10)
    assert [item["entry"]["type"] for item in view["journal"]] == ["run", "sleep"]
    proxy.kill()
    time.sleep(2.0)  # the timer falls due while the proxy is down
    proxy.restart(services=SERVICES)
    done = proxy.wait_status(inv, "completed", timeout=15)
    sleep_entry = done["journal"][1]["entry"]
    assert sleep_entry["completed"] is True
    assert done["completed_ms"] >= sleep_entry["wake_at_ms"]
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    cluster.ledger.check_journal(inv, done["journal"])
    assert proxy.attach(inv).status_code == 200


def test_proxy_killed_right_after_the_timer_fires(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster, env={"PROXY_FAULTS": "timers.after_fire:1"})
    inv = proxy.send("Sleeper/nap", {"seconds": 0.5})
    # The fault point ends the proxy right after the commit that fired the timer.
    assert proxy.wait(15) == 137
    proxy.restart(services=SERVICES, env={"PROXY_FAULTS": ""})
    done = proxy.wait_status(inv, "completed", timeout=15)
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    assert done["journal"][1]["entry"]["completed"] is True


def test_handler_killed_during_the_child_call(cluster: Cluster) -> None:
    handler, proxy = _start(cluster)
    inv = proxy.send("Caller/call_child", 21)
    parent = proxy.wait_status(inv, "suspended", timeout=10)
    child_id = parent["journal"][1]["entry"]["invocation_id"]
    cluster.ledger.wait_for(child_id, 0, "start", timeout=10)
    handler.kill()  # during the child's slow step
    handler.start()
    handler.wait_ready()
    done = proxy.wait_status(inv, "completed", timeout=30)
    assert done["result"] == {"child": child_id, "result": 42}
    child = proxy.invocation(child_id)
    assert child["status"] == "completed" and child["result"] == 42
    # The child was started once (one invocation id), its committed steps never re-ran, and the
    # step that was in flight when the handler died ran at most twice.
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    counts = cluster.ledger.start_counts(child_id)
    assert counts[1] == 1 and counts[0] <= 2
    cluster.ledger.check_journal(child_id, child["journal"])


def test_proxy_killed_during_the_child_call(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    inv = proxy.send("Caller/call_child", 5)
    parent = proxy.wait_status(inv, "suspended", timeout=10)
    child_id = parent["journal"][1]["entry"]["invocation_id"]
    cluster.ledger.wait_for(child_id, 0, "start", timeout=10)
    proxy.kill()
    proxy.restart(services=SERVICES)
    done = proxy.wait_status(inv, "completed", timeout=30)
    assert done["result"] == {"child": child_id, "result": 10}
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    counts = cluster.ledger.start_counts(child_id)
    assert counts[1] == 1 and counts[0] <= 2


def test_child_terminal_error_surfaces_in_the_caller(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    response = proxy.call("Caller/call_child", -1)
    assert response.status_code == 200
    assert response.json()["result"] == "child failed: 422 negative input -1"


def test_gather_of_calls(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    response = proxy.call("Caller/fan_out", 4, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == [0, 2, 4, 6]


def test_awakeable_resolved_after_a_proxy_restart(cluster: Cluster) -> None:
    handler, proxy = _start(cluster)
    inv = proxy.send("Approver/wait", 3600)
    view = proxy.wait_status(inv, "suspended", timeout=10)
    awk_id = view["journal"][1]["entry"]["value"]
    assert awk_id.startswith("awk_")
    proxy.kill()
    handler.kill()
    proxy.restart(services=SERVICES)
    handler.start()
    handler.wait_ready()
    resolve = proxy.http.post(
        f"{proxy.ingress}/restate/awakeables/{awk_id}/resolve",
        content=b'{"ok": true}',
        headers={"content-type": "application/json"},
    )
    assert resolve.status_code == 202
    done = proxy.wait_status(inv, "completed", timeout=20)
    assert done["result"] == {"winner": "approval", "value": {"ok": True}}
    json_header = {"content-type": "application/json"}
    # Restate's answers: completing it again, or completing a well-formed id nobody knows, is
    # accepted (202) and changes nothing; only a malformed id is refused.
    again = proxy.http.post(f"{proxy.ingress}/restate/awakeables/{awk_id}/resolve", content=b"1", headers=json_header)
    assert again.status_code == 202
    assert proxy.invocation(inv)["result"] == {"winner": "approval", "value": {"ok": True}}
    unknown = proxy.http.post(
        f"{proxy.ingress}/restate/awakeables/awk_{'0' * 26}_1/resolve", content=b"1", headers=json_header
    )
    assert unknown.status_code == 202
    malformed = proxy.http.post(
        f"{proxy.ingress}/restate/awakeables/awk_nope_1/resolve", content=b"1", headers=json_header
    )
    assert malformed.status_code == 400
    assert cluster.ledger.start_counts(inv) == {1: 1}
    # The timer that lost the race is gone with the invocation's completion.
    assert proxy.counts()["timers"] == 0


def test_workflow_run_once_from_handlers_too(cluster: Cluster) -> None:
    handler = cluster.handler(APP)
    proxy = cluster.proxy([handler], services=("Caller", "Once"))
    outcomes = proxy.call("Caller/run_once_twice", "k1").json()
    assert outcomes == ["ran k1 with x", "409: workflow 'Once/k1' was already run"]
    again = proxy.call("Once/k1/run/send", "y")
    assert again.json()["status"] == "PreviouslyAccepted"


def test_awakeable_reject_and_timeout(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    rejected = proxy.send("Approver/wait", 3600)
    view = proxy.wait_status(rejected, "suspended", timeout=10)
    awk_id = view["journal"][1]["entry"]["value"]
    response = proxy.http.post(f"{proxy.ingress}/restate/awakeables/{awk_id}/reject", content=b"no way")
    assert response.status_code == 202
    failed = proxy.attach(rejected)
    assert failed.status_code == 500 and "no way" in failed.json()["message"]

    timed_out = proxy.call("Approver/wait", 0.5)
    assert timed_out.status_code == 200
    assert timed_out.json() == {"winner": "timeout", "value": None}


def test_delayed_send_survives_a_restart(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    response = proxy.call("Child/work/send?delay=1500ms", 4)
    assert response.status_code == 202
    inv = response.json()["invocationId"]
    assert proxy.invocation(inv)["status"] == "scheduled"
    proxy.kill()
    time.sleep(1.0)
    proxy.restart(services=SERVICES)
    done = proxy.wait_status(inv, "completed", timeout=20)
    assert done["result"] == 8
    assert done["completed_ms"] - done["created_ms"] >= 1500
    bad = proxy.call("Child/work?delay=1s", 1)
    assert bad.status_code == 400

    # A delayed send from inside a handler is durable the same way.
    child_id = proxy.call("Caller/send_later", 1.0).json()
    assert proxy.invocation(child_id)["status"] == "scheduled"
    assert proxy.wait_status(child_id, "completed", timeout=20)["result"] == 14


def test_deterministic_helpers_across_suspension(cluster: Cluster) -> None:
    _handler, proxy = _start(cluster)
    result = proxy.call("Sleeper/helpers", None).json()
    # The generator is re-seeded on every attempt, so the values drawn before the sleep are the
    # same on the attempt after it, and so are the next ones.
    assert result["first"]["random"] != result["again"]["random"]
    inv = proxy.send("Sleeper/helpers", None)
    view = proxy.wait_status(inv, "completed", timeout=10)
    assert view["journal"][0]["entry"]["name"] == "ctx.time"
    assert view["result"]["first"]["time"] == pytest.approx(view["journal"][0]["entry"]["value"])


def test_ten_thousand_sleeping_invocations_keep_rss_flat(cluster: Cluster, tmp_path: Path) -> None:
    _handler, proxy = _start(cluster, env={"PROXY_LOG_LEVEL": "warning"})

    async def send_many(count: int, start: int) -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=proxy.ingress, limits=limits, timeout=60) as client:
            semaphore = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with semaphore:
                    r = await client.post(
                        "/Sleeper/doze/send",
                        content=b"3600",
                        headers={"content-type": "application/json", "idempotency-key": f"doze-{i}"},
                    )
                    assert r.status_code == 202, r.text

            await asyncio.gather(*(one(i) for i in range(start, start + count)))

    def anon_rss() -> int:
        # VmRSS also counts the LMDB file pages the proxy has touched (page cache, i.e. disk);
        # RssAnon is the process's own memory.
        for line in Path(f"/proc/{proxy.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no RssAnon")

    def suspended() -> int:
        counts = proxy.counts()
        return counts["timers"]

    asyncio.run(send_many(1000, 0))
    poll(lambda: suspended() >= 1000, 60, interval=0.2, message="1,000 sleepers suspended")
    poll(lambda: proxy.stats()["running_attempts"] == 0, 30, interval=0.2)
    rss_1k, anon_1k = proxy.rss_bytes(), anon_rss()
    asyncio.run(send_many(9000, 1000))
    poll(lambda: suspended() >= 10_000, 120, interval=0.5, message="10,000 sleepers suspended")
    poll(lambda: proxy.stats()["running_attempts"] == 0, 30, interval=0.2)
    rss_10k, anon_10k = proxy.rss_bytes(), anon_rss()
    growth = anon_10k - anon_1k
    print(
        f"proxy RSS with 1,000 sleepers {rss_1k / 2**20:.1f} MiB (anonymous {anon_1k / 2**20:.1f}), "
        f"with 10,000 {rss_10k / 2**20:.1f} MiB (anonymous {anon_10k / 2**20:.1f})"
    )
    # 9,000 more dormant invocations may cost allocator noise, never per-invocation memory: a
    # task or an open request each would be well over 50 MB here.
    assert growth < 6 * 2**20, f"anonymous RSS grew by {growth / 2**20:.1f} MiB for 9,000 more sleepers"
    assert rss_10k < 150 * 2**20
