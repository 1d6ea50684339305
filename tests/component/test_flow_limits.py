"""Concurrency and rate limits through the proxy in process: limits declared in the handler's code
reach the registry by discovery, the admin API shows the queue and overrides the limits at run time,
and the ingress takes the limit key from Restate's header or query parameter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from handlers_sdk import Context, Limit, Service
from tests.component.harness import Harness, StartHarness

pytestmark = pytest.mark.anyio

gate = Service("Gate")
#: Opened by each test: the handlers wait for it (they run in the test's event loop).
_open: dict[str, asyncio.Event] = {}


@gate.handler(limit=Limit(concurrency=1))
async def hold(ctx: Context, n: int) -> int:
    await _open["gate"].wait()
    return n


@gate.handler(key_limit=Limit(concurrency=1), limit_key="tenant")
async def per_tenant(ctx: Context, job: dict[str, str]) -> str:
    await _open["gate"].wait()
    return job["tenant"]


@pytest.fixture
async def h(start: StartHarness) -> AsyncIterator[Harness]:
    _open["gate"] = asyncio.Event()
    harness = await start([gate])
    yield harness
    _open["gate"].set()


async def test_the_code_limit_queues_and_the_admin_api_shows_the_place_in_line(h: Harness) -> None:
    ids = [await h.send("/Gate/hold", n) for n in range(3)]
    await h.wait_status(ids[0], "running")
    views = [await h.inspect(i) for i in ids]
    assert [v["status"] for v in views] == ["running", "pending", "pending"]
    assert [v.get("queue_position") for v in views] == [None, 1, 2]
    assert views[1]["waiting_for_limit"] == {"scope": "handler", "service": "Gate", "handler": "hold"}
    assert views[0]["limit_slots"] == [{"scope": "handler", "service": "Gate", "handler": "hold"}]
    listed = (await h.admin.get("/invocations", params={"status": "pending"})).json()
    assert [v.get("queue_position") for v in listed["invocations"]] == [1, 2]
    limits = (await h.admin.get("/services/Gate/limits")).json()
    assert limits["code"]["handlers"]["hold"] == {"concurrency": 1}
    assert limits["effective"] == limits["code"] and limits["override"] is None
    assert {"scope": "handler", "service": "Gate", "handler": "hold", "running": 1, "queued": 2} in limits["groups"]


async def test_an_override_raises_the_limit_at_run_time_and_starts_the_queue(h: Harness) -> None:
    ids = [await h.send("/Gate/hold", n) for n in range(3)]
    await h.wait_status(ids[2], "pending")
    wider = {"handlers": {"hold": {"concurrency": 3}}}
    response = await h.admin.put("/services/Gate/limits", json=wider)
    assert response.status_code == 200, response.text
    assert response.json()["effective"] == wider and response.json()["override"] == wider
    for invocation_id in ids:
        await h.wait_status(invocation_id, "running")
    _open["gate"].set()
    for invocation_id in ids:
        await h.wait_status(invocation_id, "completed")
    back = (await h.admin.delete("/services/Gate/limits")).json()
    assert back["override"] is None and back["effective"]["handlers"]["hold"] == {"concurrency": 1}
    assert back["groups"] == []  # nothing held, nothing queued: no rows left


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "JSON object of limits"),
        (b"{nope", "JSON object of limits"),
        (b'{"handlers": {"hold": {"concurency": 2}}}', "unknown field(s) concurency in handlers.hold"),
        (b'{"services": {}}', "unknown field(s) services"),
        (b'{"handlers": {"hold": {"concurrency": "two"}}}', "invalid limits"),
        (b'{"handlers": {"hold": {"concurrency": -1}}}', "0 (no limit) or more"),
        (b'{"handlers": {"nope": {"concurrency": 1}}}', "unknown handler 'nope'"),
    ],
)
async def test_a_bad_limit_gets_a_clear_400_and_changes_nothing(h: Harness, body: bytes, message: str) -> None:
    response = await h.admin.put("/services/Gate/limits", content=body)
    assert response.status_code == 400 and message in response.json()["message"], response.text
    assert (await h.admin.get("/services/Gate/limits")).json()["override"] is None


async def test_limits_of_an_unknown_service_are_404(h: Harness) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await h.admin.request(method, "/services/Nope/limits", json={})
        assert response.status_code == 404, (method, response.text)


async def test_the_limit_key_comes_from_the_header_the_query_or_the_input(h: Harness) -> None:
    first = await h.send("/Gate/per_tenant", {"tenant": "a"})
    by_header = await h.send("/Gate/per_tenant", {"tenant": "z"}, headers={"x-restate-limit-key": "a"})
    by_query = await h.send("/Gate/per_tenant", {"tenant": "z"}, params={"limit-key": "b"})
    await h.wait_status(by_query, "running")
    views = [await h.inspect(i) for i in (first, by_header, by_query)]
    assert [v["limit_key"] for v in views] == ["a", "a", "b"]
    assert [v["status"] for v in views] == ["running", "pending", "running"]
    _open["gate"].set()
    await h.wait_status(by_header, "completed")


@pytest.mark.parametrize("action", ["kill", "cancel"])
async def test_killing_or_cancelling_the_holder_starts_the_next_in_line(h: Harness, action: str) -> None:
    first, second, third = [await h.send("/Gate/hold", n) for n in range(3)]
    await h.wait_status(third, "pending")
    cancelled_queued = await h.admin.patch(f"/invocations/{third}/cancel")
    assert cancelled_queued.status_code == 200, cancelled_queued.text
    assert (await h.wait_status(third, "completed"))["failure"]["code"] == 409
    response = await h.admin.patch(f"/invocations/{first}/{action}")
    assert response.status_code == 200, response.text
    if action == "cancel":
        # Cancelling is cooperative: the slot is held until the cancelled invocation has ended.
        await h.wait_until(first, lambda v: v["attempt"] == 2)
        assert (await h.inspect(second))["status"] == "pending"
        _open["gate"].set()
    await h.wait_status(first, "completed")
    await h.wait_status(second, "running" if action == "kill" else "completed")
    _open["gate"].set()
    await h.wait_status(second, "completed")
    assert (await h.admin.get("/services/Gate/limits")).json()["groups"] == []
