"""Idempotency keys: same key + same target = same invocation and result, even inside one commit batch."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from handlers_sdk import Context, Service
from handlers_sdk.clock import FakeClock
from tests.component.harness import StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def counting_service(runs: list[str], gate: asyncio.Event | None = None) -> Service:
    svc = Service("Counter")
    ticket = itertools.count(1)

    @svc.handler()
    async def take(ctx: Context, who: str) -> dict[str, object]:
        if gate is not None:
            await gate.wait()

        def issue() -> int:
            runs.append(who)
            return next(ticket)

        number = await ctx.run("issue", issue)
        return {"who": who, "ticket": number}

    @svc.handler()
    async def other(ctx: Context, who: str) -> str:
        runs.append("other:" + who)
        return who

    return svc


async def test_same_key_same_invocation_and_result(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)])
    first = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "k1"})
    second = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "k1"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["x-restate-id"] == second.headers["x-restate-id"]
    assert runs == ["a"]
    counts = await h.counts()
    assert (counts["invocations"], counts["idempotency"]) == (1, 1)


async def test_different_keys_are_different_invocations(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)])
    a = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "k1"})
    b = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "k2"})
    c = await h.ingress.post("/Counter/take", json="a")
    assert len({r.headers["x-restate-id"] for r in (a, b, c)}) == 3
    assert runs == ["a", "a", "a"]


async def test_send_reports_previously_accepted(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)])
    first = await h.ingress.post("/Counter/take/send", json="a", headers={"idempotency-key": "s"})
    again = await h.ingress.post("/Counter/take/send", json="a", headers={"idempotency-key": "s"})
    assert first.status_code == again.status_code == 202
    assert first.json()["status"] == "Accepted"
    assert again.json() == {"invocationId": first.json()["invocationId"], "status": "PreviouslyAccepted"}
    # A call with the same key attaches to the same invocation.
    call = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "s"})
    assert call.headers["x-restate-id"] == first.json()["invocationId"]
    assert runs == ["a"]


async def test_key_is_scoped_to_the_target(start: StartHarness) -> None:
    # Restate's rule: the key is scoped to service/handler (and object key), not global.
    runs: list[str] = []
    h = await start([counting_service(runs)])
    take = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "shared"})
    other = await h.ingress.post("/Counter/other", json="a", headers={"idempotency-key": "shared"})
    assert take.headers["x-restate-id"] != other.headers["x-restate-id"]
    assert sorted(runs) == ["a", "other:a"]


async def test_same_key_with_another_body_returns_the_first_result(start: StartHarness) -> None:
    # As in Restate, the key alone identifies the invocation; a different body does not start another.
    runs: list[str] = []
    h = await start([counting_service(runs)])
    first = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "k"})
    second = await h.ingress.post("/Counter/take", json="b", headers={"idempotency-key": "k"})
    assert second.json() == first.json() == {"who": "a", "ticket": 1}
    assert runs == ["a"]


async def test_huge_idempotency_key(start: StartHarness) -> None:
    # Longer than LMDB's 511-byte key limit: hashed in the index, stored whole in the record.
    runs: list[str] = []
    h = await start([counting_service(runs)])
    key = "k" * 600
    first = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": key})
    second = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": key})
    assert first.status_code == 200 and first.content == second.content
    view = await h.inspect(first.headers["x-restate-id"])
    assert view["idempotency_key"] == key
    assert runs == ["a"]


async def test_64_concurrent_calls_with_one_key_make_one_invocation(start: StartHarness) -> None:
    runs: list[str] = []
    gate = asyncio.Event()
    h = await start([counting_service(runs, gate)])
    calls = [
        asyncio.ensure_future(h.ingress.post("/Counter/take", json="x", headers={"idempotency-key": "one"}))
        for _ in range(64)
    ]
    # Every caller is in, waiting on the one invocation, before the handler may finish.
    while not (ids := [r.id for r in h.apps.runtime.list_invocations()[0]]) or (
        h.apps.runtime.waiting_clients(ids[0]) < 64
    ):
        await asyncio.sleep(0.001)
    gate.set()
    responses = await asyncio.gather(*calls)
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert len({r.headers["x-restate-id"] for r in responses}) == 1
    assert runs == ["x"]
    assert (await h.counts())["invocations"] == 1


async def test_64_concurrent_sends_with_one_key_inside_one_commit_batch(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)])
    release = await h.writer_blocked()
    sends = [
        asyncio.ensure_future(h.ingress.post("/Counter/take/send", json="y", headers={"idempotency-key": "batch"}))
        for _ in range(64)
    ]
    # All 64 writes are queued behind the blocked writer, so they are committed as one batch.
    await h.wait_queued(64)
    await release()
    responses = await asyncio.gather(*sends)
    assert {r.status_code for r in responses} == {202}
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["Accepted"] + ["PreviouslyAccepted"] * 63
    ids = {r.json()["invocationId"] for r in responses}
    assert len(ids) == 1
    inv = ids.pop()
    await h.wait_status(inv, "completed")
    assert runs == ["y"]
    counts = await h.counts()
    assert (counts["invocations"], counts["idempotency"], counts["inputs"]) == (1, 1, 1)


async def test_distinct_keys_inside_one_commit_batch_stay_distinct(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)])
    release = await h.writer_blocked()
    sends = [
        asyncio.ensure_future(
            h.ingress.post("/Counter/take/send", json=str(i), headers={"idempotency-key": f"k{i % 8}"})
        )
        for i in range(32)
    ]
    await h.wait_queued(32)
    await release()
    responses = await asyncio.gather(*sends)
    by_key: dict[str, set[str]] = {}
    for i, response in enumerate(responses):
        by_key.setdefault(f"k{i % 8}", set()).add(response.json()["invocationId"])
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len({next(iter(ids)) for ids in by_key.values()}) == 8
    assert sum(r.json()["status"] == "Accepted" for r in responses) == 8
    for ids in by_key.values():
        await h.wait_status(next(iter(ids)), "completed")
    assert len(runs) == 8


async def test_an_expired_key_starts_a_new_invocation(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([counting_service(runs)], retention=0.05, sweep_interval=3600, clock=FakeClock())
    first = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "short"})
    await h.advance(0.1)
    second = await h.ingress.post("/Counter/take", json="a", headers={"idempotency-key": "short"})
    assert first.headers["x-restate-id"] != second.headers["x-restate-id"]
    assert (first.json()["ticket"], second.json()["ticket"]) == (1, 2)
    assert runs == ["a", "a"]
