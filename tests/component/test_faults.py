"""Faults between the proxy and the handler (respx in the middle): retries, Retry-After, garbage, pause."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from handlers_sdk import Context, RetryableError, Service
from handlers_sdk.clock import FakeClock
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def service(runs: list[str]) -> Service:
    svc = Service("Shop")

    @svc.handler()
    async def buy(ctx: Context, item: str) -> str:
        def reserve() -> str:
            runs.append(item)
            return f"reserved {item}"

        reserved: str = await ctx.run("reserve", reserve)
        return reserved

    return svc


async def completed_call(h: Harness, item: str = "book") -> tuple[httpx.Response, dict[str, object]]:
    response = await h.ingress.post("/Shop/buy", json=item)
    assert response.status_code == 200, response.text
    return response, await h.inspect(response.headers["x-restate-id"])


async def test_500_then_success_is_retried(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([service(runs)])
    h.plan += [httpx.Response(500, text="boom"), httpx.Response(502)]
    response, view = await completed_call(h)
    assert response.json() == "reserved book"
    assert view["attempt"] == 3 and view["retry_count"] == 2
    failure = view["last_failure"]
    assert isinstance(failure, dict) and failure["code"] == 502
    assert len(h.attempts_of(str(view["id"]))) == 3
    assert runs == ["book"]


async def test_every_attempt_gets_a_new_token(start: StartHarness) -> None:
    h = await start([service([])])
    h.plan += [httpx.Response(503) for _ in range(2)]
    _, view = await completed_call(h)
    sent = h.attempts_of(str(view["id"]))
    assert [s.request.attempt for s in sent] == [1, 2, 3]
    assert len({s.request.token for s in sent}) == 3


async def test_connection_errors_are_retried(start: StartHarness) -> None:
    h = await start([service([])])
    h.plan += [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]
    _, view = await completed_call(h)
    assert view["attempt"] == 3
    failure = view["last_failure"]
    assert isinstance(failure, dict) and failure["code"] == 503 and "unreachable" in str(failure["message"])


@pytest.mark.parametrize(("header", "seconds"), [("1", 1.0), ("0.3", 0.3)])
async def test_retry_after_is_honoured(start: StartHarness, header: str, seconds: float) -> None:
    h = await start([service([])], retry_initial_interval=0.01, retry_max_interval=0.02)
    h.plan.append(httpx.Response(429, headers={"retry-after": header}))
    inv = await h.send("/Shop/buy", "pen")
    view = await h.wait_status(inv, "backing-off")
    assert view["next_retry_ms"] - view["modified_ms"] >= seconds * 1000
    await h.wait_status(inv, "completed", timeout=seconds + 5)
    first, second = h.attempts_of(inv)
    assert second.at - first.at >= seconds * 0.95


async def test_retryable_error_retry_after_is_honoured(start: StartHarness) -> None:
    svc = Service("Flaky")
    tries: list[float] = []

    @svc.handler()
    async def go(ctx: Context) -> int:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) == 1:
            raise RetryableError("not yet", retry_after=timedelta(milliseconds=300))
        return len(tries)

    h = await start([svc])
    response = await h.ingress.post("/Flaky/go")
    assert response.json() == 2
    assert tries[1] - tries[0] >= 0.29


GARBAGE = {
    "not-json": httpx.Response(200, content=b"<html>oops</html>", headers={"content-type": "application/json"}),
    "truncated": httpx.Response(
        200, content=b'{"type":"completed","value":', headers={"content-type": "application/json"}
    ),
    "wrong-schema": httpx.Response(200, json={"type": "finished", "value": 1}),
    "no-tag": httpx.Response(200, json={"value": 1}),
    "array": httpx.Response(200, json=[1, 2]),
    "empty": httpx.Response(200, content=b"", headers={"content-type": "application/json"}),
    "html-content-type": httpx.Response(
        200, content=b'{"type":"completed","value":"fake"}', headers={"content-type": "text/html"}
    ),
    "no-content-type": httpx.Response(200, content=b'{"type":"completed","value":"fake"}'),
    "deep": httpx.Response(200, content=b"[" * 100_000, headers={"content-type": "application/json"}),
    "invalid-utf8": httpx.Response(200, content=b'{"type":"\xff"}', headers={"content-type": "application/json"}),
    "bad-entry": httpx.Response(200, json={"type": "completed", "entries": [{"index": 0, "entry": {"type": "?"}}]}),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_outcomes_are_retried_and_visible(start: StartHarness, garbage: httpx.Response) -> None:
    runs: list[str] = []
    h = await start([service(runs)], retry_initial_interval=0.2, retry_max_interval=0.2)
    h.plan.append(garbage)
    inv = await h.send("/Shop/buy", "cup")
    view = await h.wait_status(inv, "backing-off")
    failure = view["last_failure"]
    assert failure["code"] == 571
    assert "protocol violation" in failure["message"]
    assert view["journal"] == []  # the journal is untouched
    view = await h.wait_status(inv, "completed")
    assert view["result"] == "reserved cup"
    assert view["last_failure"]["code"] == 571  # still there for the record
    assert runs == ["cup"]


async def test_unknown_protocol_version_answer_is_retried(start: StartHarness) -> None:
    # What an SDK that speaks another protocol version answers: a 400 before running anything.
    h = await start([service([])])
    h.plan.append(httpx.Response(400, json={"code": 400, "message": "unsupported protocol version 1"}))
    _, view = await completed_call(h)
    assert view["attempt"] == 2


async def test_response_over_the_size_cap_pauses_at_once(start: StartHarness) -> None:
    """Retrying would re-run the handler for the same answer (issue 13): paused after one attempt,
    the reason in the last failure (more in tests/component/test_ingress_limits.py)."""
    h = await start([service([])], max_response_bytes=1000)
    h.plan.append(httpx.Response(200, json={"type": "completed", "value": "x" * 5000}))
    inv = await h.send("/Shop/buy", "lamp")
    view = await h.wait_status(inv, "paused")
    failure = view["last_failure"]
    assert isinstance(failure, dict) and "larger than 1000 bytes" in str(failure["message"])
    assert view["attempt"] == 1


async def test_retries_exhausted_pause_the_invocation(start: StartHarness) -> None:
    runs: list[str] = []
    h = await start([service(runs)], retry_max_attempts=3, clock=FakeClock())
    h.plan += [httpx.Response(500, text="always") for _ in range(10)]
    inv = await h.send("/Shop/buy", "lamp")
    view = await h.advance_until(inv, lambda v: v["status"] == "paused")
    assert view["retry_count"] == 3
    assert view["last_failure"]["code"] == 500
    assert "always" in view["last_failure"]["message"]
    # The attempt that paused it winds down; then nothing is in flight and no retry is armed.
    await h.wait_until(inv, lambda v: not h.apps.runtime.invoker.is_busy(inv))
    await h.advance(3600)
    assert len(h.attempts_of(inv)) == 3, "no attempt after the pause, however long it waits"
    assert (await h.inspect(inv))["status"] == "paused"
    # Nothing is lost: the input is kept, the invocation is still active, output is not ready.
    counts = await h.counts()
    assert (counts["inputs"], counts["active"]) == (1, 1)
    output = await h.ingress.get(f"/restate/invocation/{inv}/output")
    assert output.status_code == 470
    assert runs == []


async def test_handler_error_is_retried_with_backoff_until_paused(start: StartHarness) -> None:
    svc = Service("Broken")
    calls: list[int] = []

    @svc.handler()
    async def go(ctx: Context) -> None:
        calls.append(1)
        raise RuntimeError("bug")

    h = await start([svc], retry_max_attempts=4)
    inv = await h.send("/Broken/go")
    view = await h.wait_status(inv, "paused")
    assert view["retry_count"] == 4 and len(calls) == 4
    assert view["last_failure"]["code"] == 500
    assert "RuntimeError: bug" in view["last_failure"]["message"]


async def test_a_hanging_handler_is_abandoned_and_retried(start: StartHarness) -> None:
    svc = Service("Hang")
    attempts: list[int] = []
    forever = asyncio.Event()

    @svc.handler()
    async def go(ctx: Context) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            await forever.wait()
        return len(attempts)

    clock = FakeClock()
    h = await start([svc], inactivity_timeout=0.2, clock=clock)
    inv = await h.send("/Hang/go")
    await h.wait_until(inv, lambda v: len(attempts) == 1)
    await h.advance(0.19)
    assert len(h.attempts_of(inv)) == 1 and h.apps.runtime.invoker.is_busy(inv), "alive before the timeout"
    view = await h.advance_until(inv, lambda v: v["status"] == "completed", step=0.01)
    assert view["result"] == 2
    assert view["attempt"] == 2
    assert view["last_failure"]["code"] == 408
    # The completed attempt winds down (its task ends just after the commit): then none is left.
    await h.wait_until(inv, lambda v: not h.apps.runtime.invoker.active)
    assert (await h.admin.get("/stats")).json()["running_attempts"] == 0


async def test_acks_keep_a_long_attempt_alive(start: StartHarness) -> None:
    svc = Service("Long")

    clock = FakeClock()

    @svc.handler()
    async def go(ctx: Context) -> int:
        total = 0
        for i in range(6):
            clock.advance(0.1)  # 0.6 s in all, but never 0.4 s without an ack
            total += await ctx.run(f"step{i}", int, i)  # a step whose value is i
        return total

    h = await start([svc], inactivity_timeout=0.4, clock=clock)
    response = await h.ingress.post("/Long/go")
    assert response.json() == 15
    view = await h.inspect(response.headers["x-restate-id"])
    assert (view["attempt"], view["last_failure"]) == (1, None)
