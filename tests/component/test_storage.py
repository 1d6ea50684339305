"""A full LMDB map: the request that does not fit gets 507, the rest of its batch is unaffected."""

from __future__ import annotations

import asyncio
import json

import pytest

from handlers_sdk import Context, Service
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MAP = 1024 * 1024  # map_size == max_map_size: the map cannot grow


def echo() -> Service:
    svc = Service("Store")

    @svc.handler()
    async def keep(ctx: Context, value: object) -> int:
        return len(json.dumps(value))

    return svc


async def full_store(start: StartHarness) -> Harness:
    return await start([echo()], map_size=MAP, max_map_size=MAP, max_body_bytes=4 * MAP)


def big_body() -> bytes:
    return json.dumps("x" * (MAP + 100)).encode()


async def test_write_over_the_map_is_a_507_and_changes_nothing(start: StartHarness) -> None:
    h = await full_store(start)
    before = await h.counts()
    response = await h.ingress.post("/Store/keep/send", content=big_body())
    assert response.status_code == 507
    body = response.json()
    assert (body["code"], body["error"]) == (507, "storage_full")
    assert await h.counts() == before
    # The store is still healthy: reads and new (small) writes work.
    ok = await h.ingress.post("/Store/keep", json=[1, 2, 3])
    assert (ok.status_code, ok.json()) == (200, 9)
    assert (await h.admin.get("/stats")).json()["storage"]["map_size"] == MAP


async def test_other_requests_in_the_batch_are_unaffected(start: StartHarness) -> None:
    h = await full_store(start)
    release = await h.writer_blocked()
    small = [asyncio.ensure_future(h.ingress.post("/Store/keep/send", json=i)) for i in range(8)]
    big = asyncio.ensure_future(h.ingress.post("/Store/keep/send", content=big_body()))
    more = [asyncio.ensure_future(h.ingress.post("/Store/keep/send", json=i)) for i in range(8, 16)]
    await h.wait_queued(17)  # all of them are committed as one batch
    await release()
    big_response = await big
    assert big_response.status_code == 507
    responses = await asyncio.gather(*small, *more)
    assert [r.status_code for r in responses] == [202] * 16
    ids = [r.json()["invocationId"] for r in responses]
    for i, inv in enumerate(ids):
        view = await h.wait_status(inv, "completed")
        assert view["result"] == len(json.dumps(i))
    counts = await h.counts()
    assert (counts["invocations"], counts["inputs"], counts["active"]) == (16, 16, 0)
