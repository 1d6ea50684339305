"""The step-ack endpoint: fenced by attempt token and index; entries over max_entry_bytes fail the step."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest

from handlers_sdk import Context, Service, TerminalError
from handlers_sdk.protocol import ACK_PATH, AppendRequest, Failure, InvokeRequest, RunEntry, encode
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MAX_ENTRY = 2000


def gated(gate: asyncio.Event) -> Service:
    svc = Service("Gated")

    @svc.handler()
    async def go(ctx: Context) -> str:
        await gate.wait()
        done: str = await ctx.run("step", lambda: "done")
        return done

    return svc


def append_body(request: InvokeRequest, index: int, entry: RunEntry, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "invocation_id": request.invocation_id,
        "attempt": request.attempt,
        "token": request.token,
        "index": index,
        "entry": entry,
    }
    fields.update(overrides)
    return encode(AppendRequest(**fields))


async def post_append(h: Harness, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.apps.callback), base_url="http://callback.test"
    ) as to:
        return await to.post(ACK_PATH, content=body, headers={"content-type": "application/json"})


async def running_attempt(h: Harness) -> InvokeRequest:
    inv = await h.send("/Gated/go")
    for _ in range(500):
        if h.attempts_of(inv):
            return h.attempts_of(inv)[-1].request
        await asyncio.sleep(0.005)
    raise AssertionError("the attempt was never sent")


def entry(name: str, value: bytes = b"1") -> RunEntry:
    return RunEntry(name=name, value=msgspec.Raw(value))


async def test_ack_fencing(start: StartHarness) -> None:
    gate = asyncio.Event()
    h = await start([gated(gate)])
    request = await running_attempt(h)
    assert request.callback_url == h.settings.effective_callback_url

    journal_rows = (await h.counts())["journal"]
    # Another token, another attempt number, an unknown invocation: 409, nothing written.
    for overrides in ({"token": "forged"}, {"attempt": request.attempt + 1}, {"attempt": request.attempt - 1},
                      {"invocation_id": "inv_unknown"}):  # fmt: skip
        response = await post_append(h, append_body(request, 5, entry("x"), **overrides))
        assert response.status_code == 409, overrides
        assert response.json()["error"] == "fenced"
    assert (await h.counts())["journal"] == journal_rows

    # The current attempt may append; an identical re-send (lost response) is fine.
    first = await post_append(h, append_body(request, 5, entry("x")))
    assert (first.status_code, first.json()) == (200, {"index": 5})
    again = await post_append(h, append_body(request, 5, entry("x")))
    assert (again.status_code, again.json()) == (200, {"index": 5})
    assert (await h.counts())["journal"] == journal_rows + 1

    # The same index with another entry is fenced, and the first entry stays.
    for other in (entry("y"), entry("x", b"2"), RunEntry(name="x", failure=Failure(message="no"))):
        response = await post_append(h, append_body(request, 5, other))
        assert response.status_code == 409, other
    view = await h.inspect(request.invocation_id)
    assert view["journal"] == [{"index": 5, "entry": {"type": "run", "name": "x", "value": 1}}]

    gate.set()
    done = await h.wait_status(request.invocation_id, "completed")
    assert done["result"] == "done"
    # After completion the (formerly current) attempt is fenced too.
    late = await post_append(h, append_body(request, 6, entry("late")))
    assert late.status_code == 409
    assert [item["index"] for item in (await h.inspect(request.invocation_id))["journal"]] == [0, 5]


async def test_a_retried_attempt_fences_the_previous_one(start: StartHarness) -> None:
    gate = asyncio.Event()
    h = await start([gated(gate)])
    # The first attempt "fails" at the transport level, the second one is really sent.
    h.plan.append(httpx.Response(503))
    request = await running_attempt(h)
    while len(h.attempts_of(request.invocation_id)) < 2:
        await asyncio.sleep(0.005)
    first, second = (s.request for s in h.attempts_of(request.invocation_id))
    stale = await post_append(h, append_body(first, 0, entry("step", b'"done"')))
    assert stale.status_code == 409
    current = await post_append(h, append_body(second, 3, entry("other")))
    assert current.status_code == 200
    gate.set()
    await h.wait_status(request.invocation_id, "completed")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[" * 100_000, b'{"invocation_id": 1}', b'{"invocation_id":"\xff","attempt":1}', b"null"],
)
async def test_malformed_appends_are_400s(start: StartHarness, body: bytes) -> None:
    h = await start([gated(asyncio.Event())], max_entry_bytes=200_000)
    before = await h.counts()
    response = await post_append(h, body)
    assert response.status_code == 400
    assert response.json()["source"] == "callback"
    assert await h.counts() == before


def big_steps(size: int, catch: bool = False) -> Service:
    svc = Service("Big")

    @svc.handler()
    async def go(ctx: Context) -> str:
        try:
            value = await ctx.run("big", lambda: "x" * size)
        except TerminalError as exc:
            if not catch:
                raise
            return f"caught {exc.status_code}"
        return f"got {len(value)}"

    return svc


@pytest.mark.parametrize("mode", ["ack", "suspend"])
@pytest.mark.parametrize(
    "size",
    [
        MAX_ENTRY * 2,  # well within the callback's read limit (the entry plus an envelope)
        MAX_ENTRY * 10,  # over the body limit of the callback endpoint itself
    ],
)
async def test_entry_over_max_entry_bytes_fails_the_step_terminally(start: StartHarness, mode: str, size: int) -> None:
    h = await start([big_steps(size)], mode=mode, max_entry_bytes=MAX_ENTRY)
    response = await h.ingress.post("/Big/go")
    assert response.status_code == 413, response.text
    assert "too large" in response.json()["message"]
    view = await h.inspect(response.headers["x-restate-id"])
    (item,) = view["journal"]
    assert item["entry"]["name"] == "big"
    assert item["entry"]["failure"]["code"] == 413
    assert "value" not in item["entry"]
    assert view["failure"]["code"] == 413


async def test_oversized_step_failure_can_be_caught_and_is_replayed(start: StartHarness) -> None:
    h = await start([big_steps(MAX_ENTRY * 2, catch=True)], max_entry_bytes=MAX_ENTRY)
    response = await h.ingress.post("/Big/go")
    assert (response.status_code, response.json()) == (200, "caught 413")


async def test_entry_just_under_the_limit_is_journaled(start: StartHarness) -> None:
    h = await start([big_steps(MAX_ENTRY - 200)], max_entry_bytes=MAX_ENTRY)
    response = await h.ingress.post("/Big/go")
    assert (response.status_code, response.json()) == (200, f"got {MAX_ENTRY - 200}")


async def test_direct_oversized_append_is_a_413_without_writes(start: StartHarness) -> None:
    gate = asyncio.Event()
    h = await start([gated(gate)], max_entry_bytes=MAX_ENTRY)
    request = await running_attempt(h)
    before = await h.counts()
    value = b'"' + b"x" * (MAX_ENTRY + 10) + b'"'
    response = await post_append(h, append_body(request, 4, entry("big", value)))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await h.counts() == before
    gate.set()
    await h.wait_status(request.invocation_id, "completed")


async def test_a_wrong_token_is_fenced_without_telling_the_right_one(start: StartHarness) -> None:
    h = await start([gated(asyncio.Event())])
    request = await running_attempt(h)
    before = await h.counts()
    for token in ("forged", "", "\u00e9t\u00e9", request.token[:-1], request.token + "x"):
        response = await post_append(h, append_body(request, 5, entry("x"), token=token))
        assert response.status_code == 409, token
        assert response.json()["error"] == "fenced"
        assert request.token not in response.text
    assert await h.counts() == before


async def test_the_admin_api_does_not_serve_step_acks(start: StartHarness) -> None:
    h = await start([gated(asyncio.Event())])
    request = await running_attempt(h)
    before = await h.counts()
    body = append_body(request, 5, entry("x"))
    response = await h.admin.post(ACK_PATH, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 404
    assert await h.counts() == before
    assert (await post_append(h, body)).status_code == 200  # the callback app does
