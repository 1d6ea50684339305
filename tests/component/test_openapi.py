"""``GET /services/{name}/openapi`` over a registered deployment: the schemas travel from the SDK's
discovery answer through the registry (and the store) into the document."""

from __future__ import annotations

import dataclasses

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from handlers_sdk import Context, Service, VirtualObject
from proxy.api.http import exception_handlers
from proxy.api.openapi import openapi_routes
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

OLD_URL = "http://old.test"


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Move:
    by: Point
    note: str = ""


def shapes() -> Service:
    svc = Service("Shapes")

    @svc.handler()
    async def shift(ctx: Context, move: Move) -> Point:
        return Point(move.by.x + 1, move.by.y)

    @svc.handler()
    async def echo(ctx, value):  # type: ignore[no-untyped-def]
        return value

    return svc


def counter() -> VirtualObject:
    obj = VirtualObject("Counter")

    @obj.handler()
    async def add(ctx: Context, by: int) -> int:
        return by

    return obj


def _openapi_client(h: Harness) -> httpx.AsyncClient:
    """The routes on a tiny admin-like app of their own (admin.py mounts them in the proxy)."""
    app = Starlette(routes=openapi_routes(h.apps.runtime), exception_handlers=exception_handlers("admin"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin.test")


async def test_the_document_carries_the_schemas_discovery_announced(start: StartHarness) -> None:
    h = await start([shapes(), counter()])
    async with _openapi_client(h) as client:
        response = await client.get("/services/Shapes/openapi")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        doc = response.json()
        assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "Shapes"
        shift = doc["paths"]["/Shapes/shift"]["post"]
        body = shift["requestBody"]["content"]["application/json"]["schema"]
        assert body["title"] == "Move"
        assert body["properties"]["by"] == {"$ref": "#/components/schemas/Point"}
        assert doc["components"]["schemas"]["Point"]["title"] == "Point"
        assert shift["responses"]["200"]["content"]["application/json"]["schema"]["title"] == "Point"
        assert doc["paths"]["/Shapes/echo"]["post"]["requestBody"]["required"] is False
        assert "/Shapes/shift/send" in doc["paths"]

        obj = (await client.get("/services/Counter/openapi")).json()
        assert sorted(obj["paths"]) == ["/Counter/{key}/add", "/Counter/{key}/add/send"]

        missing = await client.get("/services/Nope/openapi")
        assert missing.status_code == 404
        assert "Nope" in missing.json()["message"]

    # The schemas are in the store, not only in the routing table.
    runtime = h.apps.runtime
    assert runtime.machine is not None
    runtime.registry.load(runtime.machine)
    stored = runtime.registry.service("Shapes")
    move, point = stored.input_schemas["shift"], stored.output_schemas["shift"]
    assert isinstance(move, dict) and move["title"] == "Move"
    assert isinstance(point, dict) and point["title"] == "Point"
    assert "echo" not in stored.input_schemas and "echo" not in stored.output_schemas

    # The handler still gets its typed input: the schemas change nothing on the ingress.
    called = await h.ingress.post("/Shapes/shift", json={"by": {"x": 1}})
    assert called.status_code == 200, called.text
    assert called.json() == {"x": 2, "y": 0}


async def test_a_manifest_without_schemas_registers_and_documents_any_json(start: StartHarness) -> None:
    """An SDK from before handler schemas: the registry reads its manifest and keeps no schemas."""
    h = await start([counter()])
    old = b'{"services":[{"name":"Legacy","handlers":[{"name":"ping"}]}]}'
    discovery = h.router.route(host="old.test", path="/discovery").mock(
        return_value=httpx.Response(200, content=old, headers={"content-type": "application/json"})
    )
    registered = await h.admin.post("/deployments", json={"uri": OLD_URL})
    assert registered.status_code == 201, registered.text
    assert discovery.called
    legacy = h.apps.runtime.registry.service("Legacy")
    assert (legacy.handlers, legacy.input_schemas, legacy.output_schemas) == ({"ping": ""}, {}, {})
    async with _openapi_client(h) as client:
        doc = (await client.get("/services/Legacy/openapi")).json()
    ping = doc["paths"]["/Legacy/ping"]["post"]
    assert ping["requestBody"] == {"required": False, "content": {"application/json": {"schema": {}}}}
    assert ping["responses"]["200"]["content"]["application/json"]["schema"] == {}


async def test_the_admin_api_serves_the_document(start: StartHarness) -> None:
    """The proxy's own admin app mounts the route (also under Restate's /v{N} prefixes)."""
    h = await start([shapes()])
    for path in ("/services/Shapes/openapi", "/v1/services/Shapes/openapi"):
        response = await h.admin.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["info"]["title"] == "Shapes"
    assert (await h.admin.get("/services/Nope/openapi")).status_code == 404
