"""A stopped proxy resumes its in-flight invocations on the next start; the writer isolates failures."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from durable_core.errors import Conflict
from durable_core.txn import Txn
from handlers_sdk import Context, Service
from proxy.store.lmdb import Store, StoreLocked
from tests.component.harness import StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def two_steps(runs: Counter[str], gate: asyncio.Event) -> Service:
    svc = Service("Resume")

    @svc.handler()
    async def go(ctx: Context) -> str:
        def one() -> str:
            runs["one"] += 1
            return "1"

        async def two() -> str:
            runs["two"] += 1
            await gate.wait()
            return "2"

        first: str = await ctx.run("one", one)
        second: str = await ctx.run("two", two)
        return first + second

    return svc


async def test_restart_resumes_in_flight_invocations(start: StartHarness, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "shared")
    runs: Counter[str] = Counter()
    gate = asyncio.Event()
    first = await start([two_steps(runs, gate)], data_dir=data_dir)
    inv = await first.send("/Resume/go")
    await first.wait_until(inv, lambda v: len(v["journal"]) == 1)
    while runs["two"] == 0:
        await asyncio.sleep(0.005)
    await first.stop()  # the attempt is cut off inside step "two"

    gate.set()
    second = await start([two_steps(runs, gate)], data_dir=data_dir)
    view = await second.wait_status(inv, "completed")
    assert view["result"] == "12"
    assert runs == {"one": 1, "two": 2}, "the journaled step is not re-run, the cut-off one is"
    assert view["attempt"] == 2
    (resumed,) = second.attempts_of(inv)
    assert [i.index for i in resumed.request.journal] == [0]
    output = await second.ingress.get(f"/restate/invocation/{inv}/output")
    assert (output.status_code, output.json()) == (200, "12")


async def test_completed_results_survive_a_restart(start: StartHarness, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "shared")
    runs: Counter[str] = Counter()
    gate = asyncio.Event()
    gate.set()
    first = await start([two_steps(runs, gate)], data_dir=data_dir)
    call = await first.ingress.post("/Resume/go", headers={"idempotency-key": "once"})
    await first.stop()
    second = await start([two_steps(runs, gate)], data_dir=data_dir)
    again = await second.ingress.post("/Resume/go", headers={"idempotency-key": "once"})
    assert again.headers["x-restate-id"] == call.headers["x-restate-id"]
    assert again.json() == call.json() == "12"
    assert runs == {"one": 1, "two": 1}
    assert second.attempts_of(call.headers["x-restate-id"]) == []


async def test_one_proxy_per_data_dir(start: StartHarness) -> None:
    h = await start([two_steps(Counter(), asyncio.Event())])
    with pytest.raises(StoreLocked):
        Store(h.settings.data_dir, h.settings.map_size).open()


async def test_a_failing_write_does_not_sink_its_batch(start: StartHarness) -> None:
    h = await start([two_steps(Counter(), asyncio.Event())])
    writer = h.apps.runtime.writer

    def put(key: bytes, fail: Exception | None = None) -> Callable[[Txn], bytes]:
        def write(txn: Txn) -> bytes:
            txn.put("inputs", key, b"1")
            if fail is not None:
                raise fail
            return key

        return write

    release = await h.writer_blocked()
    futures = [
        asyncio.ensure_future(writer.submit(put(b"a"))),
        asyncio.ensure_future(writer.submit(put(b"b", Conflict("no")))),
        asyncio.ensure_future(writer.submit(put(b"c", ValueError("bug")))),
        asyncio.ensure_future(writer.submit(put(b"d"))),
    ]
    await h.wait_queued(4)
    await release()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == b"a" and results[3] == b"d"
    assert isinstance(results[1], Conflict) and isinstance(results[2], ValueError)
    store = h.apps.runtime.store
    assert [store.get("inputs", k) for k in (b"a", b"b", b"c", b"d")] == [b"1", None, None, b"1"]


async def test_a_lowered_retention_applies_to_invocations_completed_before_it(
    start: StartHarness, tmp_path: Path
) -> None:
    """Expiry is stamped at completion; restarting with a shorter ``--retention`` re-stamps what
    is stored, so invocations completed under the old (24 h) retention are purged by the new one."""
    data_dir = str(tmp_path / "shared")
    runs: Counter[str] = Counter()
    gate = asyncio.Event()
    gate.set()
    first = await start([two_steps(runs, gate)], data_dir=data_dir, retention=24 * 3600.0)
    done = [await first.send("/Resume/go") for _ in range(3)]
    for inv in done:
        await first.wait_status(inv, "completed")
    await first.stop()

    second = await start([two_steps(runs, gate)], data_dir=data_dir, retention=0.001, sweep_interval=3600.0)
    with anyio.fail_after(5):
        while (await second.counts())["invocations"] > 0:
            await asyncio.sleep(0.01)
    assert (await second.counts())["journal"] == 0
    assert second.apps.runtime.sweeper.purged == 3
    for inv in done:
        assert (await second.admin.get(f"/invocations/{inv}")).status_code == 404

    # Once applied, a restart with the same retention walks nothing again.
    assert await second.apps.runtime.sweeper.apply_retention() == 0
