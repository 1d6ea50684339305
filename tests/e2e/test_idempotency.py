"""Issue 2 (g): 64 concurrent calls with one idempotency key make one invocation, one handler run,
and 64 identical answers; the same for ``/send`` (one Accepted, the rest PreviouslyAccepted)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.e2e.harness import Cluster, ProxyProc

pytestmark = pytest.mark.e2e

N = 64


async def _burst(proxy: ProxyProc, path: str, body: object, key: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        headers = {"content-type": "application/json", "idempotency-key": key}
        content = json.dumps(body)
        return await asyncio.gather(
            *(client.post(f"{proxy.ingress}/{path}", content=content, headers=headers) for _ in range(N))
        )


def test_64_concurrent_calls_one_key_one_invocation(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    before = proxy.counts()
    responses = asyncio.run(_burst(proxy, "Ledger/run", {"steps": 3, "sleep": 0.05}, "same-key"))

    assert {r.status_code for r in responses} == {200}
    ids = {r.headers["x-restate-id"] for r in responses}
    assert len(ids) == 1
    assert len({r.content for r in responses}) == 1
    (inv,) = ids
    assert cluster.ledger.invocations() == [inv]
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1, 2: 1}
    after = proxy.counts()
    assert after["invocations"] == before["invocations"] + 1
    assert after["idempotency"] == before["idempotency"] + 1
    # A later call with the key is answered from the store, without running anything.
    late = proxy.call("Ledger/run", {"steps": 3, "sleep": 0.05}, key="same-key")
    assert late.status_code == 200 and late.content == responses[0].content
    assert late.headers["x-restate-id"] == inv
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1, 2: 1}


def test_64_concurrent_sends_one_key_one_accepted(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler])
    responses = asyncio.run(_burst(proxy, "Ledger/run/send", {"steps": 2}, "send-key"))

    assert {r.status_code for r in responses} == {202}
    bodies = [r.json() for r in responses]
    assert len({b["invocationId"] for b in bodies}) == 1
    statuses = sorted(b["status"] for b in bodies)
    assert statuses == ["Accepted"] + ["PreviouslyAccepted"] * (N - 1)
    inv = bodies[0]["invocationId"]
    assert proxy.attach(inv).status_code == 200
    assert cluster.ledger.invocations() == [inv]
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
