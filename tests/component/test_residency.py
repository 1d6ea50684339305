"""The bound on the LMDB pages the proxy keeps mapped, and the writer-thread calls it runs in."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from durable_core.txn import DBS
from handlers_sdk import Context, Service
from proxy.engine.runtime import Runtime
from tests.component.harness import StartHarness, decode

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LIMIT = 256 * 1024
BLOB = 20_000


def blobs() -> Service:
    svc = Service("Blobs")

    @svc.handler()
    async def make(ctx: Context, n: int) -> str:
        blob: str = await ctx.run("blob", lambda: f"{n}:" + "x" * BLOB)
        return blob

    return svc


def _touch_everything(runtime: Runtime) -> int:
    """Read every row of every database (maps every page of the file); returns the bytes read."""
    read = 0
    with runtime.store.read() as txn:
        for db in DBS:
            for key, value in txn.items_from(db, b""):
                read += len(key) + len(value)
    return read


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
async def test_mapped_pages_are_dropped_past_the_limit_and_data_reads_back_unchanged(start: StartHarness) -> None:
    h = await start([blobs()], resident_map_limit=LIMIT, resident_check_interval=3600.0)
    runtime = h.apps.runtime
    ids = [await h.send("/Blobs/make", n) for n in range(60)]
    for inv in ids:
        await h.wait_status(inv, "completed")
    assert runtime.store.usage()["used_bytes"] > 4 * LIMIT  # more data than the limit
    assert _touch_everything(runtime) > 4 * LIMIT
    before = runtime.residency.measure()
    assert before > LIMIT, "reading the whole file maps more than the limit"

    dropped = await runtime.residency.check()
    assert dropped == before
    assert runtime.residency.measure() < LIMIT
    assert runtime.residency.drops == 1
    # Below the limit a check drops nothing.
    assert await runtime.residency.check() == 0
    assert runtime.residency.drops == 1
    # Dropping unmapped pages, not data: every result reads back the same.
    for n, inv in enumerate(ids):
        output = await h.ingress.get(f"/restate/invocation/{inv}/output")
        assert decode(output) == f"{n}:" + "x" * BLOB
    metrics = (await h.admin.get("/metrics")).text
    assert "durable_lmdb_map_drops_total 1" in metrics
    assert "durable_lmdb_map_resident_bytes " in metrics


async def test_no_limit_means_no_loop(start: StartHarness) -> None:
    h = await start([blobs()], resident_map_limit=0)
    assert not h.apps.runtime.residency.enabled


async def test_writer_call_runs_on_the_writer_thread_between_transactions(start: StartHarness) -> None:
    h = await start([blobs()])
    writer = h.apps.runtime.writer
    order: list[str] = []
    release = await h.writer_blocked()

    def write(txn: object) -> None:
        order.append("write")

    def call() -> str:
        order.append("call")
        return threading.current_thread().name

    writes = [asyncio.ensure_future(writer.submit(write)) for _ in range(3)]
    called = asyncio.ensure_future(writer.call(call))
    later = asyncio.ensure_future(writer.submit(write))
    await h.wait_queued(5)
    await release()
    assert await called == "lmdb-writer"
    await asyncio.gather(*writes, later)
    assert order == ["write", "write", "write", "call", "write"]


async def test_writer_call_passes_errors_back_and_the_writer_lives_on(start: StartHarness) -> None:
    h = await start([blobs()])
    writer = h.apps.runtime.writer

    def broken() -> None:
        raise OSError(22, "madvise: Invalid argument")

    with pytest.raises(OSError, match="Invalid argument"):
        await writer.call(broken)
    inv = await h.send("/Blobs/make", 1)
    await h.wait_status(inv, "completed")


async def test_a_failing_madvise_stops_the_bound_once_and_says_so(
    start: StartHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start([blobs()], resident_map_limit=1, resident_check_interval=3600.0)
    runtime = h.apps.runtime

    def refuse(regions: object) -> int:
        raise OSError(1, "madvise: Operation not permitted")

    monkeypatch.setattr("proxy.engine.residency.drop_pages", refuse)
    inv = await h.send("/Blobs/make", 1)
    await h.wait_status(inv, "completed")
    assert await runtime.residency.check() == 0
    assert not runtime.residency.enabled
    assert "stopped bounding the LMDB map's resident pages" in caplog.text
    assert await runtime.residency.check() == 0  # no second attempt, no second warning
    assert caplog.text.count("stopped bounding") == 1
    # The proxy goes on working.
    inv = await h.send("/Blobs/make", 2)
    await h.wait_status(inv, "completed")
