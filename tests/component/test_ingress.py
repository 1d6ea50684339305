"""Ingress API in-process: call, send, attach, output and Restate's status codes; bad input changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from handlers_sdk import Context, Service, TerminalError
from tests.component.harness import Harness, StartHarness, decode

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MAX_BODY = 4096


def greeter(gate: asyncio.Event | None = None) -> Service:
    svc = Service("Greeter")

    @svc.handler()
    async def greet(ctx: Context, name: str) -> str:
        if gate is not None:
            await gate.wait()
        greeting = await ctx.run("greeting", lambda: f"Hello {name}")
        return f"{greeting}!"

    @svc.handler()
    async def ping(ctx: Context) -> str:
        return "pong"

    @svc.handler()
    async def echo(ctx: Context, value: Any) -> Any:
        return value

    @svc.handler()
    async def fail(ctx: Context, code: int) -> None:
        raise TerminalError(f"failed with {code}", code)

    @svc.handler()
    async def fail_in_step(ctx: Context) -> None:
        def charge() -> None:
            raise TerminalError("card declined", 402)

        await ctx.run("charge", charge)

    @svc.handler()
    async def count(ctx: Context, n: int) -> int:
        return n + 1

    return svc


@pytest.fixture
async def h(start: StartHarness) -> AsyncIterator[Harness]:
    yield await start([greeter()], max_body_bytes=MAX_BODY)


# -- the happy paths ----------------------------------------------------------------------------


async def test_call_returns_the_result(h: Harness) -> None:
    response = await h.ingress.post("/Greeter/greet", json="Ada")
    assert response.status_code == 200
    assert response.json() == "Hello Ada!"
    assert response.headers["content-type"] == "application/json"
    view = await h.inspect(response.headers["x-restate-id"])
    assert view["status"] == "completed" and view["result"] == "Hello Ada!"
    assert [item["entry"]["name"] for item in view["journal"]] == ["greeting"]


async def test_call_without_body_or_input(h: Harness) -> None:
    response = await h.ingress.post("/Greeter/ping")
    assert (response.status_code, response.json()) == (200, "pong")


@pytest.mark.parametrize("value", [None, 0, "", [], {"a": [1, {"b": None}]}, "ünï€ødé", 1.5, True])
async def test_call_round_trips_json_values(h: Harness, value: Any) -> None:
    response = await h.ingress.post("/Greeter/echo", json=value)
    assert response.status_code == 200
    assert response.json() == value


async def test_trailing_slash_and_json_content_type_variants(h: Harness) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json", "text/json"):
        response = await h.ingress.post("/Greeter/count/", content=b"41", headers={"content-type": content_type})
        assert (response.status_code, response.json()) == (200, 42), content_type


async def test_send_then_attach_and_output(start: StartHarness) -> None:
    gate = asyncio.Event()
    h = await start([greeter(gate)])
    response = await h.ingress.post("/Greeter/greet/send", json="Bo")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "Accepted"
    inv = body["invocationId"]
    assert response.headers["x-restate-id"] == inv

    # Not done yet: output is Restate's 470, attach waits.
    output = await h.ingress.get(f"/restate/invocation/{inv}/output")
    assert output.status_code == 470
    assert decode(output)["code"] == 470
    attach = asyncio.ensure_future(h.ingress.get(f"/restate/invocation/{inv}/attach"))
    while h.apps.runtime.waiting_clients(inv) == 0:  # the attach is in, waiting for the result
        await asyncio.sleep(0.001)
    assert not attach.done()

    gate.set()
    attached = await attach
    assert (attached.status_code, attached.json()) == (200, "Hello Bo!")
    output = await h.ingress.get(f"/restate/invocation/{inv}/output")
    assert (output.status_code, output.json()) == (200, "Hello Bo!")
    assert output.headers["x-restate-id"] == inv


async def test_attach_to_a_completed_invocation(h: Harness) -> None:
    call = await h.ingress.post("/Greeter/greet", json="Cy")
    inv = call.headers["x-restate-id"]
    for action in ("attach", "output"):
        response = await h.ingress.get(f"/restate/invocation/{inv}/{action}")
        assert (response.status_code, response.json()) == (200, "Hello Cy!")


async def test_health(h: Harness) -> None:
    for client in (h.ingress, h.admin):
        response = await client.get("/health")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_headers_reach_the_handler(start: StartHarness) -> None:
    svc = Service("Headers")

    @svc.handler()
    async def show(ctx: Context) -> dict[str, str]:
        return ctx.headers

    h = await start([svc])
    response = await h.ingress.post("/Headers/show", headers={"x-tenant": "t1", "idempotency-key": "k"})
    headers = response.json()
    assert headers["x-tenant"] == "t1"
    assert "idempotency-key" not in headers and "host" not in headers
    # Restate's ingress tells the handler the path (and query) the request came in on.
    assert headers["x-restate-ingress-path"] == "/Headers/show"


# -- Restate's answers (issue 14; Restate's client is driven in tests/compat) -------------------


async def test_get_invokes_a_handler_and_an_empty_idempotency_key_is_ignored(h: Harness) -> None:
    response = await h.ingress.get("/Greeter/ping")
    assert (response.status_code, response.json()) == (200, "pong")
    first = await h.ingress.post("/Greeter/echo", json=1, headers={"idempotency-key": ""})
    second = await h.ingress.post("/Greeter/echo", json=2, headers={"idempotency-key": ""})
    assert (first.json(), second.json()) == (1, 2)
    assert first.headers["x-restate-id"] != second.headers["x-restate-id"]


async def test_restate_health_and_v1_7_paths(h: Harness) -> None:
    health = await h.ingress.get("/restate/health")
    assert health.json() == {"services": ["Greeter"]}
    call = await h.ingress.post("/restate/call/Greeter/echo", json="v17")
    assert (call.status_code, call.json()) == (200, "v17")
    send = await h.ingress.post("/restate/send/Greeter/echo", json="sent", params={"delay": "PT0.05S"})
    assert send.status_code == 202
    assert send.json()["executionTime"].endswith("Z")
    inv = send.json()["invocationId"]
    attached = await h.ingress.get(f"/restate/attach/{inv}")
    assert (attached.status_code, attached.json()) == (200, "sent")
    for path in (f"/restate/output/{inv}", "/restate/output", "/restate/attach"):
        body = {"target": "invocation", "invocationId": inv}
        response = await (h.ingress.get(path) if inv in path else h.ingress.post(path, json=body))
        assert (response.status_code, response.json()) == (200, "sent"), path
    lookup = await h.ingress.post("/restate/lookup", json={"target": "invocation", "invocationId": inv})
    assert lookup.json() == {"invocationId": inv}
    assert (await h.ingress.post("/restate/lookup", json={"target": "nope"})).status_code == 400


async def test_attach_by_idempotency_key_and_idempotency_expires(h: Harness) -> None:
    call = await h.ingress.post("/Greeter/echo", json="kept", headers={"idempotency-key": "a key/1"})
    assert "idempotency-expires" in call.headers
    for action in ("attach", "output"):
        response = await h.ingress.get(f"/restate/invocation/Greeter/echo/a%20key%2F1/{action}")
        assert (response.status_code, response.json()) == (200, "kept")
        assert response.headers["x-restate-id"] == call.headers["x-restate-id"]
    missing = await h.ingress.get("/restate/invocation/Greeter/echo/other/output")
    assert missing.status_code == 404
    plain = await h.ingress.post("/Greeter/echo", json="plain")
    assert "idempotency-expires" not in plain.headers


async def test_a_limit_key_too_long_is_refused_and_workflow_paths_need_a_workflow(h: Harness) -> None:
    before = await h.counts()
    too_long = "k" * 257
    for kwargs in ({"headers": {"x-restate-limit-key": too_long}}, {"params": {"limit-key": too_long}}):
        response = await h.ingress.post("/Greeter/echo", json=1, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 400 and "limit key" in response.json()["message"]
    assert await h.counts() == before
    # Greeter is not a workflow: it has no run to attach to (Restate's 404).
    assert (await h.ingress.get("/restate/workflow/Greeter/k/attach")).status_code == 404


async def test_unknown_ids_405s_and_cors(h: Harness) -> None:
    unknown = "inv_" + "0" * 26
    response = await h.ingress.get(f"/restate/output/{unknown}")
    assert response.status_code == 404 and response.headers["x-restate-id"] == unknown
    not_allowed = await h.ingress.put("/Greeter/echo", json=1)
    assert not_allowed.status_code == 405 and not_allowed.headers["x-restate-error-source"] == "ingress"
    origin = "http://page.example"
    preflight = await h.ingress.options(
        "/Greeter/echo",
        headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,idempotency-key",
        },
    )  # fmt: skip
    assert preflight.status_code == 200 and preflight.content == b""
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type,idempotency-key"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    answered = await h.ingress.post("/Greeter/echo", json=1, headers={"origin": origin})
    assert answered.headers["access-control-allow-origin"] == origin
    assert "origin" in answered.headers["vary"]


# -- terminal errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 404, 409, 422, 500, 599])
async def test_terminal_error_status_is_the_user_code(h: Harness, code: int) -> None:
    response = await h.ingress.post("/Greeter/fail", json=code)
    assert response.status_code == code
    body = response.json()
    assert body["code"] == code
    assert body["message"] == f"failed with {code}"
    assert body["error"] == "terminal_error"
    assert response.headers["x-restate-error-source"] == "invocation"
    view = await h.inspect(response.headers["x-restate-id"])
    assert view["status"] == "completed"
    assert view["failure"] == {"code": code, "message": f"failed with {code}"}


@pytest.mark.parametrize("code", [200, 302, 600, 999])
async def test_terminal_error_with_a_non_error_code_is_a_500(h: Harness, code: int) -> None:
    response = await h.ingress.post("/Greeter/fail", json=code)
    assert response.status_code == 500
    assert response.json()["message"] == f"failed with {code}"


async def test_terminal_error_in_a_step_is_journaled_and_fails_the_call(h: Harness) -> None:
    response = await h.ingress.post("/Greeter/fail_in_step")
    assert response.status_code == 402
    assert response.json()["message"] == "card declined"
    view = await h.inspect(response.headers["x-restate-id"])
    assert view["journal"][0]["entry"]["failure"] == {"code": 402, "message": "card declined"}
    assert view["attempt"] == 1


async def test_terminal_failure_is_also_what_output_and_attach_return(h: Harness) -> None:
    inv = await h.send("/Greeter/fail", 418)
    await h.wait_status(inv, "completed")
    for action in ("attach", "output"):
        response = await h.ingress.get(f"/restate/invocation/{inv}/{action}")
        assert response.status_code == 418
        assert response.json()["message"] == "failed with 418"


async def test_input_that_does_not_fit_the_handler_type_is_a_400(h: Harness) -> None:
    response = await h.ingress.post("/Greeter/count", json="not a number")
    assert response.status_code == 400
    assert "invalid input" in response.json()["message"]


# -- rejected requests: the right 4xx, a JSON body, and no writes --------------------------------


BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    # (id, method, path, request kwargs, expected status)
    ("unknown-service", "POST", "/Nope/greet", {"json": "x"}, 404),
    ("unknown-handler", "POST", "/Greeter/nope", {"json": "x"}, 404),
    ("unknown-handler-send", "POST", "/Greeter/nope/send", {"json": "x"}, 404),
    # Restate's "bad path" answers are 400s (404 is for unknown services, handlers and invocations).
    ("too-many-segments", "POST", "/Greeter/greet/extra/more", {"json": "x"}, 400),
    ("service-only", "POST", "/Greeter", {"json": "x"}, 400),
    ("restate-prefix", "POST", "/restate/Greeter/greet", {"json": "x"}, 404),
    ("unknown-invocation-attach", "GET", "/restate/invocation/inv_00000000000000000000000000/attach", {}, 404),
    ("unknown-invocation-output", "GET", "/restate/invocation/inv_00000000000000000000000000/output", {}, 404),
    # A malformed invocation id is a bad request (Restate's "bad invocation id").
    ("malformed-invocation-id", "GET", "/restate/invocation/inv_nope/output", {}, 400),
    ("non-ascii-invocation", "GET", "/restate/invocation/inv_ü/output", {}, 400),
    ("unknown-invocation-action", "GET", "/restate/invocation/inv_nope/cancel", {}, 404),
    ("put-a-handler", "PUT", "/Greeter/greet", {"json": "x"}, 405),
    ("delete-a-handler", "DELETE", "/Greeter/greet", {}, 405),
    ("post-to-restate-path", "POST", "/restate/invocation/inv_00000000000000000000000000/attach", {}, 405),
    ("body-over-limit", "POST", "/Greeter/echo", {"content": b'"' + b"x" * MAX_BODY + b'"'}, 413),
    ("send-body-over-limit", "POST", "/Greeter/echo/send", {"content": b"[" + b"1," * MAX_BODY + b"1]"}, 413),
    # A body that is not JSON by its content type: Restate's input validation answers 400.
    ("text-plain", "POST", "/Greeter/echo", {"content": b'"x"', "headers": {"content-type": "text/plain"}}, 400),
    ("form", "POST", "/Greeter/echo", {"data": {"a": "b"}}, 400),
    (
        "octet-stream",
        "POST",
        "/Greeter/echo/send",
        {"content": b"\x00\x01", "headers": {"content-type": "application/octet-stream"}},
        400,
    ),
    (
        "truncated-json",
        "POST",
        "/Greeter/echo",
        {"content": b'{"a": ', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("not-json", "POST", "/Greeter/echo", {"content": b"hello", "headers": {"content-type": "application/json"}}, 400),
    ("trailing-garbage", "POST", "/Greeter/echo", {"content": b"1 2"}, 400),
    (
        "invalid-utf8",
        "POST",
        "/Greeter/echo",
        {"content": b'"\xff\xfe"', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("invalid-utf8-in-object", "POST", "/Greeter/echo/send", {"content": b'{"k": "\xc3"}'}, 400),
    ("lone-surrogate-bytes", "POST", "/Greeter/echo", {"content": b'"\xed\xa0\x80"'}, 400),
    ("delay-on-call", "POST", "/Greeter/echo", {"json": 1, "params": {"delay": "10s"}}, 400),
    ("bad-delay", "POST", "/Greeter/echo/send", {"json": 1, "params": {"delay": "soon"}}, 400),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS]
)
async def test_bad_requests_get_a_json_4xx_and_change_nothing(
    h: Harness, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    await h.ingress.post("/Greeter/greet", json="warm-up")  # the store holds something to keep
    before = await h.counts()
    response = await h.ingress.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert body["source"] == "ingress"
    assert response.headers["content-type"] == "application/json"
    assert await h.counts() == before


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 50_000, b"[" * 100_000 + b"]" * 100_000])
@pytest.mark.parametrize("suffix", ["", "/send"])
async def test_deeply_nested_json_is_a_400_without_writes(start: StartHarness, body: bytes, suffix: str) -> None:
    h = await start([greeter()])  # the default 10 MiB body limit
    before = await h.counts()
    response = await h.ingress.post("/Greeter/echo" + suffix, content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert await h.counts() == before


async def test_chunked_body_over_the_limit_is_a_413_without_writes(h: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'"'
        for _ in range(MAX_BODY // 64 + 2):
            yield b"x" * 64
        yield b'"'

    before = await h.counts()
    response = await h.ingress.post("/Greeter/echo", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await h.counts() == before


async def test_body_exactly_at_the_limit_is_accepted(h: Harness) -> None:
    body = b'"' + b"x" * (MAX_BODY - 2) + b'"'
    assert len(body) == MAX_BODY
    response = await h.ingress.post("/Greeter/echo", content=body)
    assert response.status_code == 200
    assert len(response.json()) == MAX_BODY - 2


async def test_an_accepted_request_adds_rows(h: Harness) -> None:
    # The counterpart of the "no writes" checks above: the counts do move when work is accepted.
    before = await h.counts()
    await h.ingress.post("/Greeter/greet", json="Di")
    after = await h.counts()
    assert after["invocations"] == before["invocations"] + 1
    assert after["inputs"] == before["inputs"] + 1
    assert after["journal"] == before["journal"] + 1


async def test_unknown_admin_routes_are_json_too(h: Harness) -> None:
    for method, path, status in [("GET", "/nope", 404), ("GET", "/invocations/inv_nope", 404),
                                 ("DELETE", "/stats", 405)]:  # fmt: skip
        response = await h.admin.request(method, path)
        assert response.status_code == status
        assert response.json()["code"] == status


async def test_bad_deployment_registration(h: Harness) -> None:
    before = await h.counts()
    for body in (b"", b"{", b'{"url": "http://x"}', b'{"uri": "ftp://x"}', b"[" * 60_000, b'{"uri": "\xff"}'):
        response = await h.admin.post("/deployments", content=body)
        assert response.status_code == 400, body[:20]
        assert response.json()["source"] == "admin"
    assert await h.counts() == before


async def test_registration_of_an_unreachable_deployment_is_a_503(h: Harness) -> None:
    h.router.route(host="down.test").mock(side_effect=httpx.ConnectError("refused"))
    before = await h.counts()
    response = await h.admin.post("/deployments", json={"uri": "http://down.test"})
    assert response.status_code == 503
    assert await h.counts() == before


async def test_slow_body_is_a_408_without_writes(start: StartHarness) -> None:
    h = await start([greeter()], body_read_timeout=0.1)

    async def trickle() -> AsyncIterator[bytes]:
        yield b"["
        await asyncio.sleep(0.5)
        yield b"]"

    before = await h.counts()
    response = await h.ingress.post("/Greeter/echo", content=trickle(), headers={"content-type": "application/json"})
    assert response.status_code == 408
    assert response.json()["error"] == "request_timeout"
    assert await h.counts() == before
