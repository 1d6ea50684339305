"""``GET :9070/invocations/{id}/journal`` on the in-process proxy, replayed with the toolkit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

import handlers_sdk
from examples.orders import orders
from handlers_sdk.protocol import RunEntry
from handlers_sdk.testing import load_export, replay_journal
from proxy import Settings, create_app
from proxy.engine.transport import HttpxTransport
from tests.toolkit.services import line_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

ORDER = {"order_id": "o-1", "sku": "sku-1", "quantity": 2, "amount": 99.0}


@dataclass
class Proxy:
    ingress: httpx.AsyncClient
    admin: httpx.AsyncClient


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    """The proxy and the order saga's handler app, wired in process."""
    settings = Settings(data_dir=str(tmp_path / "data"), transport="httpx", map_size=64 * 1024**2)
    holder: dict[str, handlers_sdk.HandlerApp] = {}

    async def to_handler(request: httpx.Request) -> httpx.Response:
        return await httpx.ASGITransport(app=holder["app"]).handle_async_request(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(to_handler))
    apps = create_app(settings, transport=HttpxTransport(settings.max_response_bytes, client=client))
    holder["app"] = handlers_sdk.app([orders], ack_transport=httpx.ASGITransport(app=apps.callback))
    await apps.runtime.start()
    ingress = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.ingress), base_url="http://ingress.test")
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.admin), base_url="http://admin.test")
    try:
        response = await admin.post("/deployments", json={"uri": "http://handler.test"})
        assert response.status_code == 201, response.text
        yield Proxy(ingress, admin)
    finally:
        await admin.aclose()
        await ingress.aclose()
        await holder["app"].ack.aclose()
        await apps.runtime.stop()


async def test_export_of_a_completed_invocation_replays_ok(proxy: Proxy) -> None:
    response = await proxy.ingress.post("/OrderFulfillment/process", json=ORDER)
    assert response.status_code == 200, response.text
    invocation_id = response.headers["x-restate-id"]

    exported = await proxy.admin.get(f"/invocations/{invocation_id}/journal")
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["format"] == "durable-proxy.journal/1"
    assert body["target"] == "OrderFulfillment/process"
    assert body["status"] == "completed"
    assert body["input"] == ORDER
    assert body["result"] == response.json()
    assert [item["entry"]["name"] for item in body["journal"]] == ["reserve", "charge", "label", "email", "complete"]
    assert body["journal"][0]["entry"]["type"] == "run"

    export = load_export(exported.content)
    assert export.random_seed > 0
    first = export.journal[0].entry
    assert isinstance(first, RunEntry) and first.source.endswith(line_of("examples.orders", 'ctx.run("reserve"'))
    report = await replay_journal([orders], export)
    assert report.status == "ok", report.format()
    assert "all 5 recorded entries replayed" in report.summary


async def test_export_of_a_terminal_failure(proxy: Proxy) -> None:
    response = await proxy.ingress.post("/OrderFulfillment/process", json={**ORDER, "amount": 50_000.0})
    assert response.status_code == 402
    exported = await proxy.admin.get(f"/invocations/{response.headers['x-restate-id']}/journal")
    body = exported.json()
    assert body["failure"] == {"code": 402, "message": "card declined for 50000.00"}
    assert "result" not in body
    report = await replay_journal([orders], load_export(exported.content))
    assert report.ok, report.format()


async def test_secret_headers_are_redacted(proxy: Proxy) -> None:
    headers = {"authorization": "Bearer s3cret", "x-tenant": "acme"}
    response = await proxy.ingress.post("/OrderFulfillment/process", json=ORDER, headers=headers)
    exported = await proxy.admin.get(f"/invocations/{response.headers['x-restate-id']}/journal")
    exported_headers = exported.json()["headers"]
    assert exported_headers["authorization"] == "<redacted>"
    assert exported_headers["x-tenant"] == "acme"
    assert b"s3cret" not in exported.content


async def test_unknown_invocation_is_404(proxy: Proxy) -> None:
    response = await proxy.admin.get("/invocations/inv_doesnotexist/journal")
    assert response.status_code == 404
    assert "not found" in msgspec.json.decode(response.content)["message"]
