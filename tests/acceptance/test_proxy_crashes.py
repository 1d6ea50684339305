"""Failure matrix #1-#3 and #24: the proxy dies (SIGKILL, a crash point, SIGTERM) with clients and
handlers busy. Every acknowledged answer survives unchanged, unknown ops resolve to one invocation
with their idempotency key, failed ops leave nothing behind, and no journaled step re-runs.

SIGKILL and SIGTERM under load run on both stores: LMDB, and PostgreSQL (a fresh database of the
session's private cluster, `tests.postgres`; skipped with the reason where it is missing)."""

from __future__ import annotations

import random
import signal
import time

import httpx
import pytest

from tests.acceptance.workload import Workload, check_history
from tests.e2e.harness import Cluster, Op, poll
from tests.postgres import PgCluster, pg_cluster

__all__ = ["pg_cluster"]

pytestmark = pytest.mark.acceptance

JOB = {"steps": 3, "sleep": 0.01}


@pytest.fixture(params=["lmdb", "postgresql"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The proxy's environment for a store: LMDB in its data dir, or a fresh PostgreSQL database."""
    if request.param == "lmdb":
        return {}
    postgres: PgCluster = request.getfixturevalue("pg_cluster")
    return {"PROXY_STORE": postgres.fresh_database("acceptance")}


def test_proxy_sigkill_under_load(cluster: Cluster, store_env: dict[str, str]) -> None:
    """#1: concurrency 16, SIGKILL at a random 0.3-1.5 s, restart, more load, then the checkers."""
    rng = random.Random(cluster.seed)
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env=store_env)
    load = Workload(proxy, cluster.history, concurrency=16, job=JOB, seed=cluster.seed)
    with load.running():
        time.sleep(rng.uniform(0.3, 1.5))  # the nemesis' schedule, not an assertion
        assert proxy.kill() == -signal.SIGKILL
        proxy.restart(services=["Ledger"])
        poll(lambda: len(cluster.history.by_outcome("ok")) > 0 and proxy.stats(), 10)
        time.sleep(1.0)
    counts = check_history(cluster, proxy, JOB, crashes=1)
    print(f"history: {counts}")
    assert counts["ok"] >= 20


# Commit #1 of every start is the deployment registration; the second is the first invocation.
@pytest.mark.parametrize(
    "fault",
    [
        "ingress.before_commit:1",
        "writer.before_commit:2",
        "writer.after_commit:2",
        "writer.after_commit:4",
        "writer.after_commit:9",
        "callbacks.before_response:2",
        "invoker.after_send:1",
    ],
)
def test_crash_point(cluster: Cluster, fault: str) -> None:
    """#2/#3: the proxy exits at a named crash point while one client runs ops one at a time; after
    a restart, retries with the same key give one invocation each and nothing re-runs."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_FAULTS": fault})
    client = httpx.Client(timeout=httpx.Timeout(20, connect=1))

    def run_op(n: int) -> Op:
        op = Op(key=f"op-{n}")
        try:
            response = client.post(
                f"{proxy.ingress}/Ledger/run", json={**JOB, "tag": op.key}, headers={"idempotency-key": op.key}
            )
        except httpx.HTTPError as exc:
            op.outcome, op.error = "unknown", repr(exc)
        else:
            op.outcome, op.status, op.inv_id = "ok", response.status_code, response.headers.get("x-restate-id")
            assert response.status_code == 200, response.text
            op.body = response.json()
        cluster.history.add(op)
        return op

    try:
        n = 0
        while n < 20 and run_op(n := n + 1).outcome == "ok":
            pass
        assert proxy.wait(10) == 137, "the crash point did not fire"
        assert "fault point" in proxy.log_tail()
        in_flight = len(cluster.history.ops)
        assert cluster.history.ops[-1].outcome == "unknown", "the client in flight must see the crash"

        proxy.restart(env={"PROXY_FAULTS": ""}, services=["Ledger"])
        if fault.split(":")[0] in ("ingress.before_commit", "writer.before_commit"):
            # Nothing of the op in flight was stored.
            assert proxy.counts()["invocations"] == in_flight - 1
            assert proxy.counts()["idempotency"] == in_flight - 1
        for extra in range(1, 3):
            assert run_op(n + extra).outcome == "ok"
    finally:
        client.close()
    counts = check_history(cluster, proxy, JOB, crashes=1)
    assert counts["unknown"] == 1
    # The op that saw the crash was retried with its key: exactly one invocation for each op.
    assert len(cluster.ledger.invocations()) == len(cluster.history.ops)


def test_sigterm_under_load_loses_nothing(cluster: Cluster, store_env: dict[str, str]) -> None:
    """#24: SIGTERM under load: exit 0 after draining, then the same checkers as for SIGKILL."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env=store_env)
    load = Workload(proxy, cluster.history, concurrency=16, job={**JOB, "sleep": 0.05}, seed=cluster.seed)
    with load.running():
        poll(lambda: len(cluster.history.by_outcome("ok")) >= 20, 20, message="20 ok ops")
        assert proxy.terminate(timeout=15) == 0
        proxy.restart(services=["Ledger"])
        time.sleep(0.5)
    counts = check_history(cluster, proxy, {**JOB, "sleep": 0.05}, crashes=1)
    print(f"history: {counts}")
