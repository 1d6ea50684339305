"""Issue 2 (f): SIGTERM makes the proxy stop accepting, drain the writer and exit 0, even with
invocations in flight and clients waiting; nothing acknowledged is lost and the work resumes after
a restart."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.harness import Cluster, poll

pytestmark = pytest.mark.e2e

STEPS = 8


def test_sigterm_drains_and_exits_zero(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    job = {"steps": STEPS, "sleep": 0.1}
    sent = [proxy.send("Ledger/run", {**job, "tag": f"s{n}"}) for n in range(5)]
    waiting: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            waiting.append(proxy.call("Ledger/run", {**job, "tag": "call"}, key="k-call", timeout=60))
        except httpx.HTTPError as exc:
            waiting.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    poll(lambda: all(len(proxy.invocation(i)["journal"]) >= 2 for i in sent), 20, message="2 steps each")
    poll(lambda: len(cluster.ledger.invocations()) == len(sent) + 1, 10, message="the called invocation to run")
    acked = {inv: proxy.invocation(inv)["journal"] for inv in sent}

    began = time.monotonic()
    code = proxy.terminate(timeout=20)
    assert code == 0, proxy.log_tail()
    assert time.monotonic() - began < 10, "SIGTERM took too long to drain"
    thread.join(10)
    assert not thread.is_alive()
    # The waiting client was not left hanging: it got a 503 saying the proxy is going away.
    assert len(waiting) == 1 and isinstance(waiting[0], httpx.Response), waiting
    assert waiting[0].status_code == 503 and waiting[0].json()["error"] == "unavailable"

    proxy.restart(services=["Ledger"])
    for inv in sent:
        done = proxy.wait_status(inv, "completed", timeout=30)
        assert done["journal"][: len(acked[inv])] == acked[inv]
        cluster.ledger.check_journal(inv, done["journal"])
        cluster.ledger.check_extra_starts(inv, crashes=1, steps=STEPS)
    again = proxy.call("Ledger/run", {**job, "tag": "call"}, key="k-call")
    assert again.status_code == 200 and again.json()["tag"] == "call"
