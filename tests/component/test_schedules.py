"""The schedules admin API in process (``POST/GET /schedules``, ``GET/DELETE/PATCH
/schedules/{id}``, ``POST /schedules/{id}/pause|resume``), a schedule declared in handler code,
and firing on the proxy's fake clock. Every bad input is a 4xx JSON error that changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from handlers_sdk import Context, Service
from handlers_sdk.clock import FakeClock
from handlers_sdk.protocol import ScheduleInfo
from tests.component.harness import HANDLER_URL, Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

START_MS = 1_800_000_000_000


def ticker() -> Service:
    svc = Service("Ticker")

    @svc.handler()
    async def tick(ctx: Context, payload: Any = None) -> Any:
        return {"payload": payload, "fire": ctx.headers.get("x-durable-fire-time")}

    @svc.handler(schedule=ScheduleInfo(every_ms=60_000, overlap="queue"))
    async def minutely(ctx: Context) -> str:
        return "ok"

    return svc


async def _start(start: StartHarness) -> Harness:
    return await start([ticker()], clock=FakeClock(now_ms=START_MS))


async def _schedules(h: Harness) -> dict[str, dict[str, Any]]:
    listed = await h.admin.get("/schedules")
    assert listed.status_code == 200, listed.text
    return {s["id"]: s for s in listed.json()["schedules"]}


async def test_a_schedule_is_created_listed_fired_paused_resumed_and_deleted(start: StartHarness) -> None:
    h = await _start(start)
    body = {"id": "t", "service": "Ticker", "handler": "tick", "every": "10s", "input": {"n": 1}, "overlap": "allow"}
    created = await h.admin.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["target"], view["every_ms"], view["input"], view["overlap"], view["catch_up"]) == (
        "Ticker/tick", 10_000, {"n": 1}, "allow", "skip"
    )  # fmt: skip
    assert view["next_fire_ms"] == START_MS + 10_000 and view["next_fire"] == "2027-01-15T08:00:10Z"
    assert set(await _schedules(h)) == {"code:Ticker:minutely", "t"}

    await h.advance(10)
    fired = await _schedules(h)
    assert fired["t"]["fired"] == 1 and fired["t"]["next_fire_ms"] == START_MS + 20_000
    invocation = fired["t"]["last_invocation_id"]
    done = await h.wait_status(invocation, "completed")
    assert done["result"] == {"payload": {"n": 1}, "fire": str(START_MS + 10_000)}
    assert done["idempotency_key"] == f"schedule:t:{START_MS + 10_000}"

    paused = await h.admin.post("/schedules/t/pause")
    assert paused.status_code == 200 and paused.json()["paused"] and paused.json()["next_fire_ms"] is None
    await h.advance(30)
    assert (await h.admin.get("/schedules/t")).json()["fired"] == 1
    resumed = await h.admin.patch("/schedules/t", json={"paused": False})
    assert resumed.status_code == 200 and resumed.json()["next_fire_ms"] == START_MS + 50_000

    deleted = await h.admin.delete("/schedules/t")
    assert deleted.status_code == 200 and deleted.json()["id"] == "t"
    assert (await h.admin.get("/schedules/t")).status_code == 404
    assert set(await _schedules(h)) == {"code:Ticker:minutely"}


async def test_a_schedule_declared_in_code_is_kept_by_registration(start: StartHarness) -> None:
    h = await _start(start)
    code = (await _schedules(h))["code:Ticker:minutely"]
    assert (code["origin"], code["every_ms"], code["overlap"]) == ("code", 60_000, "queue")
    assert code["next_fire_ms"] == START_MS + 60_000
    await h.advance(60)
    assert (await _schedules(h))["code:Ticker:minutely"]["fired"] == 1
    # Registering the same code again keeps the schedule as it is (its next fire, its counters).
    again = await h.admin.post("/deployments", json={"uri": "http://handler.test"})
    assert again.status_code == 200, again.text
    kept = (await _schedules(h))["code:Ticker:minutely"]
    assert (kept["fired"], kept["next_fire_ms"]) == (1, START_MS + 120_000)


@pytest.mark.parametrize(("body", "status", "error", "match"), [
    pytest.param(b"{nope", 400, "invalid_json", "not JSON", id="not-json"),
    pytest.param(b"[]", 400, "bad_request", "expected", id="not-an-object"),
    pytest.param(b'{"service": "Ticker"}', 400, "bad_request", "handler", id="no-handler"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": "1s", "bogus": 1}', 400, "bad_request",
                 "bogus", id="unknown-field"),
    pytest.param(b'{"service": "Ticker", "handler": "tick"}', 400, "bad_request", "either a cron", id="no-spec"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": "soon"}', 400, "bad_request",
                 "not a duration", id="bad-every"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": 0}', 400, "bad_request", "over 0",
                 id="zero-every"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "cron": "99 * * * *"}', 400, "bad_request",
                 "not a cron expression", id="bad-cron"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "cron": "* * * * *", "timezone": "Nope/Nope"}', 400,
                 "bad_request", "unknown time zone", id="bad-zone"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": "1s", "overlap": "maybe"}', 400,
                 "bad_request", "overlap", id="bad-overlap"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": "1s", "catch_up": "all"}', 400,
                 "bad_request", "catch_up", id="bad-catch-up"),
    pytest.param(b'{"service": "Nope", "handler": "tick", "every": "1s"}', 404, "not_found", "service 'Nope'",
                 id="unknown-service"),
    pytest.param(b'{"service": "Ticker", "handler": "tick", "every": "1s", "key": "k"}', 400, "bad_request",
                 "no key", id="key-on-a-service"),
    pytest.param(b'{"id": "a/b", "service": "Ticker", "handler": "tick", "every": "1s"}', 400, "bad_request",
                 "schedule id", id="bad-id"),
])  # fmt: skip
async def test_bad_schedules_are_json_errors_and_change_nothing(
    start: StartHarness, body: bytes, status: int, error: str, match: str
) -> None:
    h = await _start(start)
    before = await _schedules(h)
    response = await h.admin.post("/schedules", content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error and match in response.json()["message"]
    assert await _schedules(h) == before


async def test_bad_schedule_actions_are_json_errors(start: StartHarness) -> None:
    h = await _start(start)
    taken = await h.admin.post("/schedules", json={"id": "x", "service": "Ticker", "handler": "tick", "every": "1s"})
    assert taken.status_code == 201
    again = await h.admin.post("/schedules", json={"id": "x", "service": "Ticker", "handler": "tick", "every": "2s"})
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    for method, path, body in (
        ("GET", "/schedules/nope", None),
        ("DELETE", "/schedules/nope", None),
        ("POST", "/schedules/nope/pause", None),
        ("PATCH", "/schedules/nope", {"paused": True}),
    ):
        missing = await h.admin.request(method, path, json=body)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found", (method, path)
    wrong = await h.admin.post("/schedules/x/explode")
    assert wrong.status_code == 400 and "pause or resume" in wrong.json()["message"]
    patched = await h.admin.patch("/schedules/x", json={"paused": "yes"})
    assert patched.status_code == 400 and patched.json()["error"] == "bad_request"
    assert (await h.admin.get("/schedules/x")).json()["paused"] is False


async def test_a_url_a_deployment_moved_away_from_registers_as_another_deployment(start: StartHarness) -> None:
    """After ``PATCH /deployments/{id}`` the old URL is free: registering it again makes a new
    deployment with an id of its own, and the moved one stays where it was moved to."""
    h = await _start(start)
    [moved] = (await h.admin.get("/deployments")).json()["deployments"]
    manifest = httpx.Response(200, content=h.handler._manifest, headers={"content-type": "application/json"})
    h.router.get("http://other.test/discovery").mock(return_value=manifest)
    patched = await h.admin.patch(f"/deployments/{moved['id']}", json={"uri": "http://other.test"})
    assert patched.status_code == 200, patched.text
    again = await h.admin.post("/deployments", json={"uri": HANDLER_URL})
    assert again.status_code == 201, again.text
    listed = {d["id"]: d["uri"] for d in (await h.admin.get("/deployments")).json()["deployments"]}
    assert listed == {moved["id"]: "http://other.test", again.json()["id"]: HANDLER_URL}
