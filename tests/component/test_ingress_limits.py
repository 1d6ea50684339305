"""Issue 13's bad input and overload at the ingress, in process: every case is a 4xx (or a 503
with Retry-After), never a 500, and a refused request leaves the store as it was."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers_sdk import Context, ObjectContext, Service, VirtualObject, Workflow, WorkflowContext
from proxy.engine.transport import HttpxTransport, TransportError
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

JSON = {"content-type": "application/json"}


def services(gate: asyncio.Event | None = None) -> list[Service | VirtualObject | Workflow]:
    greeter = Service("Greeter")

    @greeter.handler()
    async def greet(ctx: Context, name: str) -> str:
        if gate is not None:
            await gate.wait()
        return f"Hello {name}!"

    counter = VirtualObject("Counter")

    @counter.handler()
    async def add(ctx: ObjectContext) -> int:
        count: int = (await ctx.get("count")) or 0
        ctx.set("count", count + 1)
        return count + 1

    signup = Workflow("Signup")

    @signup.main()
    async def run(ctx: WorkflowContext) -> str:
        return "done"

    return [greeter, counter, signup]


@pytest.fixture
async def h(start: StartHarness) -> Harness:
    return await start(services())


async def _refused(h: Harness, request: httpx.Request, status: int = 400) -> dict[str, Any]:
    """Send `request`; assert it gets `status` with the JSON error shape and changes nothing."""
    before = await h.counts()
    client = h.admin if request.url.host == "admin.test" else h.ingress
    response = await client.send(request)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "error", "message", "source"} and body["code"] == status
    assert await h.counts() == before
    return body


# -- delays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    [
        "999999999999999999999999999999",  # was struct.error in keys.timer_key
        "PT99999999999999999999H",  # the same through the ISO form
        "1" + "0" * 309,  # was OverflowError (float infinity) in parse_delay
        "9223372036854775s",  # was accepted: a start 292 million years away
        "3651d",  # just past the documented maximum (--max-delay, ten years)
    ],
)
async def test_a_delay_past_the_maximum_is_a_400(h: Harness, delay: str) -> None:
    request = h.ingress.build_request("POST", "/Greeter/greet/send", params={"delay": delay}, json="Ada")
    body = await _refused(h, request)
    assert "delay" in body["message"]


async def test_a_delay_just_under_the_maximum_is_scheduled(h: Harness) -> None:
    response = await h.ingress.post("/Greeter/greet/send", params={"delay": "3649d"}, json="Ada")
    assert response.status_code == 202, response.text
    assert response.json()["executionTime"] > "2036"


# -- keys and ids that are not what they claim ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/Counter/%FF/add"),
        ("POST", "/Counter/%FE/add"),
        ("POST", "/Counter/ok%C3/add"),  # a truncated UTF-8 sequence
        ("POST", "/Signup/%FF/run"),
        ("GET", "/restate/workflow/Signup/%FF/output"),
        ("GET", "/restate/invocation/Greeter/greet/%FF/output"),
        ("GET", "/restate/invocation/Counter/%FF/add/key/attach"),
        ("POST", "/restate/awakeables/awk_abc_%C2%B2/resolve"),  # a non-ASCII digit (was ValueError)
        ("POST", "/restate/awakeables/awk_%E6%97%A5_1/resolve"),  # a non-ASCII letter (was UnicodeEncodeError)
        ("POST", "/restate/awakeables/awk_abc_\u00b2/reject"),
    ],
)
async def test_keys_that_are_not_utf8_and_bad_awakeable_ids_are_400(h: Harness, method: str, path: str) -> None:
    await _refused(h, h.ingress.build_request(method, path, json=None))


async def test_two_invalid_keys_never_reach_one_object(h: Harness) -> None:
    """``%FF`` and ``%FE`` both decoded to U+FFFD and counted 1 then 2 on one key."""
    for raw in ("%FF", "%FE"):
        assert (await h.ingress.post(f"/Counter/{raw}/add")).status_code == 400
    # The valid spelling of U+FFFD is a key of its own, counted from 1.
    response = await h.ingress.post("/Counter/%EF%BF%BD/add")
    assert (response.status_code, response.json()) == (200, 1)


async def test_the_admin_list_cursor_must_be_an_invocation_id(h: Harness) -> None:
    """``GET /invocations?after=%FF`` was a UnicodeEncodeError (500)."""
    for cursor in ("%FF", "%C3%A9t%C3%A9"):
        request = h.admin.build_request("GET", f"/invocations?after={cursor}")
        await _refused(h, request)


# -- request heads --------------------------------------------------------------------------------


async def test_too_many_headers_get_431(h: Harness) -> None:
    headers = {f"x-h{i}": "v" for i in range(h.settings.max_header_count + 1)}
    for client in (h.ingress, h.admin):
        body = await _refused(h, client.build_request("POST", "/Greeter/greet", json="Ada", headers=headers), 431)
        assert body["error"] == "headers_too_large" and "headers" in body["message"]


async def test_a_header_over_the_size_limit_gets_431_and_is_not_stored(h: Harness) -> None:
    big = {"x-big": "a" * h.settings.max_header_bytes}
    body = await _refused(h, h.ingress.build_request("POST", "/Greeter/greet", json="Ada", headers=big), 431)
    assert str(h.settings.max_header_bytes) in body["message"]
    # Just under the limit it is an ordinary call.
    fits = {"x-big": "a" * (h.settings.max_header_bytes - 1024)}
    assert (await h.ingress.post("/Greeter/greet", json="Ada", headers=fits)).status_code == 200


# -- bodies ---------------------------------------------------------------------------------------


async def _asgi(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes | None]
) -> tuple[int, bytes, int]:
    """Drive `app` with raw ASGI messages: `chunks` are body parts (None: the client disconnects).

    Returns the status, the body and how many of `chunks` the app read.
    """
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= len(chunks):
            await asyncio.sleep(3600)  # the client sends nothing more
        chunk = chunks[read]
        read += 1
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": read < len(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"ingress.test"), *headers], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 10)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read


async def test_an_oversized_body_on_a_closing_connection_is_read_to_the_end_before_the_413(
    start: StartHarness,
) -> None:
    """Clients that send the whole body before reading must find the 413 waiting, not a reset.
    On a connection that closes after the answer (urllib's ``Connection: close``) the proxy reads
    and drops the rest first, up to --max-drain-bytes; on a keep-alive one uvicorn drops it after
    the answer, so the 413 goes at once."""
    h = await start(services(), max_body_bytes=1000, max_drain_bytes=10_000)
    before = await h.counts()
    json = [(b"content-type", b"application/json")]
    close = [(b"connection", b"close")]
    chunks: list[bytes | None] = [*[b"[" + b"1," * 499] * 8, b"1]"]
    length = [(b"content-length", str(sum(len(c or b"") for c in chunks)).encode())]
    for declared in ([], length):
        status, body, read = await _asgi(h.apps.ingress, "POST", "/Greeter/greet", json + close + declared, chunks)
        assert (status, read) == (413, len(chunks))
        assert b"payload_too_large" in body
        status, _, read = await _asgi(h.apps.ingress, "POST", "/Greeter/greet", json + declared, chunks)
        assert status == 413 and read < 3
    # Past the drain bound, or with Expect: 100-continue, the 413 comes at once.
    huge = [(b"content-length", b"1000000")]
    assert (await _asgi(h.apps.ingress, "POST", "/Greeter/greet", json + close + huge, chunks))[::2] == (413, 0)
    expect = [(b"content-length", b"5000"), (b"expect", b"100-continue")]
    assert (await _asgi(h.apps.ingress, "POST", "/Greeter/greet", json + close + expect, chunks))[::2] == (413, 0)
    assert await h.counts() == before


async def test_a_client_gone_mid_body_is_one_quiet_log_line(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A ClientDisconnect in read_body wrote two error-level tracebacks; now one debug line."""
    before = await h.counts()
    caplog.set_level(logging.DEBUG)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    status, _, _ = await _asgi(h.apps.ingress, "POST", "/Greeter/greet", headers, [b'"Ad', None])
    assert status == 499
    mine = [r for r in caplog.records if "went away" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert await h.counts() == before


# -- overload ------------------------------------------------------------------------------------


async def test_requests_past_the_concurrency_cap_get_503_with_retry_after(start: StartHarness) -> None:
    """Two calls hold the only two slots: the third is shed at once with Retry-After; the admin
    API, /health and the held calls are unaffected, and a slot freed admits the next call."""
    gate = asyncio.Event()
    h = await start(services(gate), max_concurrent_requests=2)
    held = [asyncio.ensure_future(h.ingress.post("/Greeter/greet", json=name)) for name in ("A", "B")]
    while sum(h.apps.runtime.waiting_clients(i) for i in await _ids(h)) < 2:
        await asyncio.sleep(0.001)
    before = await h.counts()
    shed = await h.ingress.post("/Greeter/greet/send", json="C")
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["error"] == "overloaded"
    assert await h.counts() == before
    assert (await h.ingress.get("/health")).status_code == 200
    assert (await h.admin.get("/invocations")).status_code == 200
    gate.set()
    assert [(r.status_code, r.json()) for r in await asyncio.gather(*held)] == [(200, "Hello A!"), (200, "Hello B!")]
    assert (await h.ingress.post("/Greeter/greet", json="D")).status_code == 200


async def _ids(h: Harness) -> list[str]:
    response = await h.admin.get("/invocations")
    return [view["id"] for view in response.json()["invocations"]]


async def test_a_writer_backlog_past_the_bound_sheds_ingress_but_not_acks(start: StartHarness) -> None:
    h = await start(services(), max_write_queue=2)
    release = await h.writer_blocked()
    queued = [asyncio.ensure_future(h.ingress.post("/Greeter/greet/send", json=n)) for n in ("A", "B", "C")]
    await h.wait_queued(3)
    shed = await h.ingress.post("/Greeter/greet/send", json="D")
    assert (shed.status_code, shed.headers.get("retry-after")) == (503, "1")
    await release()
    accepted = await asyncio.gather(*queued)
    assert [r.status_code for r in accepted] == [202, 202, 202]
    for response in accepted:  # acknowledged work all runs to the end (its acks were not shed)
        view = await h.wait_status(response.json()["invocationId"], "completed")
        assert view["result"].startswith("Hello")


# -- a handler's answer over the response limit ---------------------------------------------------


async def test_a_handler_response_over_the_limit_pauses_at_once_and_says_why(start: StartHarness) -> None:
    """Was retried 70 times, re-running the handler each time: now one attempt, then paused, the
    reason in the last failure; resuming it (the handler now answers small) completes it."""
    h = await start(services(), max_response_bytes=1000)
    h.plan.append(httpx.Response(200, content=b'{"type":"completed","value":"' + b"x" * 2000 + b'"}'))
    response = await h.ingress.post("/Greeter/greet/send", json="Ada")
    invocation_id = response.json()["invocationId"]
    view = await h.wait_status(invocation_id, "paused")
    assert len(h.attempts_of(invocation_id)) == 1
    assert view["last_failure"]["code"] == 413
    assert "larger than 1000 bytes" in view["last_failure"]["message"]
    assert "--max-response-bytes" in view["last_failure"]["message"]
    resumed = await h.admin.patch(f"/invocations/{invocation_id}/resume")
    assert resumed.status_code in (200, 202), resumed.text
    done = await h.wait_status(invocation_id, "completed")
    assert done["result"] == "Hello Ada!"


async def test_request_bodies_held_past_the_budget_shed_new_requests(start: StartHarness) -> None:
    """A waiting call holds its input: with 3000 of a 5000-byte budget held, a 3000-byte body is
    shed (503, Retry-After) before it is read, a 100-byte one still gets in, and once the held
    call answers the large one is admitted again."""
    gate = asyncio.Event()
    h = await start(services(gate), max_inflight_body_bytes=5000)
    big = '"' + "a" * 2998 + '"'
    held = asyncio.ensure_future(h.ingress.post("/Greeter/greet", content=big, headers=JSON))
    while not h.apps.runtime.invoker.active:
        await asyncio.sleep(0.001)
    before = await h.counts()
    shed = await h.ingress.post("/Greeter/greet/send", content=big, headers=JSON)
    assert (shed.status_code, shed.headers.get("retry-after")) == (503, "1"), shed.text
    assert "bodies" in shed.json()["message"]
    assert await h.counts() == before
    small = await h.ingress.post("/Greeter/greet/send", json="Bo")
    assert small.status_code == 202
    gate.set()
    assert (await held).status_code == 200
    assert (await h.ingress.post("/Greeter/greet/send", content=big, headers=JSON)).status_code == 202


@pytest.mark.parametrize(
    "uri", ["http://[::1", "http:///x", "http://", "ftp://x", "http:// x", "http://x:99999", "http://x:0", "x"]
)
async def test_a_deployment_uri_that_is_not_an_http_url_with_a_host_is_400(h: Harness, uri: str) -> None:
    """``http://[::1`` raised httpx.InvalidURL (not an httpx.HTTPError) in discovery: a 500."""
    for method, path in (("POST", "/deployments"), ("PATCH", "/deployments/dp_x")):
        body = await _refused(h, h.admin.build_request(method, path, json={"uri": uri}))
        assert "uri" in body["message"]


async def test_the_httpx_transport_reports_an_invalid_url_as_a_transport_error() -> None:
    transport = HttpxTransport(1000)
    try:
        with pytest.raises(TransportError):
            await transport.request("GET", "http://[::1/discovery", timeout=2)
    finally:
        await transport.aclose()


@pytest.mark.parametrize(
    "sql", ["SELECT * FROM read_csv('/etc/passwd')", "COPY (SELECT 1) TO '{file}'", "INSTALL httpfs", "ATTACH '{file}'"]
)
async def test_admin_sql_sees_the_snapshot_and_no_file_system(h: Harness, sql: str, tmp_path: Path) -> None:
    """Found by the fuzzer: ``POST /query`` ran DuckDB with external access on (any file the proxy
    can read, or write); and a plain ``SELECT 0`` warned (an error under pytest)."""
    target = tmp_path / "written"
    body = await _refused(h, h.admin.build_request("POST", "/query", json={"query": sql.format(file=target)}))
    assert "query failed" in body["message"] or "bad SQL" in body["message"]
    assert not target.exists()
    ok = await h.admin.post("/query", json={"query": "SELECT 0 AS n"}, headers={"accept": "application/json"})
    assert (ok.status_code, ok.json()) == (200, {"rows": [{"n": 0}]})


async def test_a_state_edit_with_invalid_utf8_is_400(h: Harness) -> None:
    """msgspec raises UnicodeDecodeError (no DecodeError) on invalid UTF-8 inside a string: a 500."""
    request = h.admin.build_request(
        "POST", "/services/Counter/state", content=b'{"object_key": "\xff", "new_state": {}}', headers=JSON
    )
    await _refused(h, request)
