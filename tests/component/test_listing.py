"""``GET /invocations?order=desc``: the list opens on the newest invocations, fast with 100,000 stored.

The store is filled through the runtime's writer in batches (the machine's own ``invoke`` and
``settle`` rules, without sending any attempt), then the first pages are timed through the admin
API. The figures are printed (``pytest -s``) and checked against generous bounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from durable_core.keys import new_invocation_id
from durable_core.txn import Txn
from handlers_sdk import Context, Service
from handlers_sdk.protocol import Completed
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

STORED = 100_000
#: One invocation in this many is left running (in the `active` index); the rest are completed.
ACTIVE_EVERY = 100
BATCH = 5_000
#: Generous: the first page takes a few milliseconds; a full scan of 100,000 rows takes seconds.
FIRST_PAGE_BOUND_S = 0.5


def lister() -> Service:
    svc = Service("Lister")

    @svc.handler()
    async def go(ctx: Context, n: int) -> int:
        return n

    return svc


async def _fill(h: Harness, count: int, base_ms: int) -> list[str]:
    """`count` invocations of Lister/go created 1 ms apart (ids in creation order), every
    `ACTIVE_EVERY`-th left running, the others completed; returns their ids, oldest first."""
    runtime = h.apps.runtime
    machine = runtime.machine
    ids: list[str] = []

    def batch(first: int, last: int) -> Callable[[Txn], None]:
        def write(txn: Txn) -> None:
            for n in range(first, last):
                now = base_ms + n
                record = machine.new_record(new_invocation_id(now), "Lister", "go", "", now=now, random_seed=n)
                stored, _, _ = machine.invoke(txn, record, str(n).encode(), now=now)
                ids.append(stored.id)
                if n % ACTIVE_EVERY:
                    done = Completed(value=msgspec.Raw(str(n).encode()))
                    machine.settle(txn, stored.id, stored.attempt, stored.token, done, now=now, next_token="t")

        return write

    for first in range(0, count, BATCH):
        await runtime.writer.submit(batch(first, min(count, first + BATCH)))
    return ids


async def _timed(h: Harness, path: str, params: dict[str, Any], runs: int = 5) -> tuple[float, dict[str, Any]]:
    """Median seconds of `runs` GETs of the admin API, and the last answer."""
    took: list[float] = []
    body: dict[str, Any] = {}
    for _ in range(runs):
        started = time.perf_counter()
        response = await h.admin.get(path, params=params)
        took.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        body = response.json()
    return statistics.median(took), body


async def test_first_page_is_the_newest_and_fast_with_100k_stored(start: StartHarness) -> None:
    h = await start([lister()], map_size=1024**3, max_map_size=1024**3)
    started = time.perf_counter()
    ids = await _fill(h, STORED, base_ms=1_700_000_000_000)
    filled = time.perf_counter() - started
    counts = (await h.admin.get("/stats")).json()["invocations"]
    assert counts == {"running": STORED // ACTIVE_EVERY, "completed": STORED - STORED // ACTIVE_EVERY}
    assert ids == sorted(ids)  # ids sort by creation time

    newest, page = await _timed(h, "/invocations", {"order": "desc", "limit": 50})
    assert [v["id"] for v in page["invocations"]] == ids[::-1][:50]
    assert page["next"] == ids[-50]

    second, page2 = await _timed(h, "/invocations", {"order": "desc", "limit": 50, "before": page["next"]})
    assert [v["id"] for v in page2["invocations"]] == ids[::-1][50:100]

    running_ids = ids[::ACTIVE_EVERY]
    running, active_page = await _timed(h, "/invocations", {"order": "desc", "limit": 50, "status": "running"})
    assert [v["id"] for v in active_page["invocations"]] == running_ids[::-1][:50]
    assert {v["status"] for v in active_page["invocations"]} == {"running"}

    completed, done_page = await _timed(h, "/invocations", {"order": "desc", "limit": 50, "status": "completed"})
    assert [v["id"] for v in done_page["invocations"]] == [i for i in ids[::-1] if i not in set(running_ids)][:50]

    oldest, old_page = await _timed(h, "/invocations", {"limit": 50})
    assert [v["id"] for v in old_page["invocations"]] == ids[:50]
    stats, _ = await _timed(h, "/stats", {})

    print(
        f"\n{STORED} invocations stored in {filled:.1f} s; median latency of GET /invocations limit=50: "
        f"newest first {newest * 1000:.1f} ms, its next page {second * 1000:.1f} ms, "
        f"status=running newest first {running * 1000:.1f} ms, status=completed newest first "
        f"{completed * 1000:.1f} ms, oldest first {oldest * 1000:.1f} ms; GET /stats {stats * 1000:.1f} ms"
    )
    for took in (newest, second, running, completed, oldest):
        assert took < FIRST_PAGE_BOUND_S
