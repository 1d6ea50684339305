"""`proxy.api.openapi.service_openapi`: the OpenAPI 3.1 document of one service's ingress paths."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgspec

from durable_core.records import ServiceRecord
from handlers_sdk import Context, Service, VirtualObject, Workflow
from proxy.api.openapi import input_description, output_description, service_openapi


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Order:
    item: str
    quantity: int


def _record(svc: Service) -> ServiceRecord:
    """What the registry stores for `svc` (the copy in `Registry.register`)."""
    info = svc.info()
    return ServiceRecord(
        name=info.name,
        type=info.type,
        handlers={h.name: h.kind for h in info.handlers},
        deployment_id="dp_test",
        input_schemas={h.name: h.input_schema for h in info.handlers if h.input_schema is not None},
        output_schemas={h.name: h.output_schema for h in info.handlers if h.output_schema is not None},
    )


def _shop() -> Service:
    svc = Service("Shop")

    @svc.handler()
    async def move(ctx: Context, p: Point) -> Point:
        return p

    @svc.handler()
    async def order(ctx: Context, order: Order) -> list[Order]:
        return [order]

    @svc.handler()
    async def double(ctx: Context, n: int) -> int:
        return 2 * n

    @svc.handler()
    async def echo(ctx, value):  # type: ignore[no-untyped-def]
        return value

    return svc


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _check_shape(doc: dict[str, Any]) -> None:
    """The parts of OpenAPI 3.1 this document uses, checked by hand (no validator is installed)."""
    assert doc["openapi"].startswith("3.1.")
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    assert set(doc) <= {"openapi", "info", "paths", "components"}
    refs = _refs(doc)
    for ref in refs:
        _resolve(doc, ref)
    assert "#/$defs/" not in str(refs)  # every definition moved to components/schemas
    operation_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        assert set(item) <= {"summary", "description", "post"}
        op = item["post"]
        operation_ids.append(op["operationId"])
        params = [_resolve(doc, p["$ref"]) if "$ref" in p else p for p in op["parameters"]]
        for param in params:
            assert param["in"] in ("path", "query", "header") and isinstance(param["name"], str)
            assert param["in"] != "path" or param["required"] is True
        assert sorted(re.findall(r"{(\w+)}", path)) == sorted(p["name"] for p in params if p["in"] == "path")
        body = op["requestBody"]
        assert isinstance(body["required"], bool)
        assert "schema" in body["content"]["application/json"]
        assert op["responses"] and "default" in op["responses"]
        for response in op["responses"].values():
            response = _resolve(doc, response["$ref"]) if "$ref" in response else response
            assert isinstance(response["description"], str)
    assert len(operation_ids) == len(set(operation_ids))


def test_a_service_has_a_call_and_a_send_per_handler_with_its_schemas() -> None:
    doc = service_openapi(_record(_shop()))
    _check_shape(doc)
    assert doc["info"] == {"title": "Shop", "version": "dp_test"}
    assert sorted(doc["paths"]) == sorted(
        f"/Shop/{h}{suffix}" for h in ("move", "order", "double", "echo") for suffix in ("", "/send")
    )

    move = doc["paths"]["/Shop/move"]["post"]
    assert move["operationId"] == "Shop-move" and move["tags"] == ["Shop"]
    assert move["parameters"] == [{"$ref": "#/components/parameters/idempotencyKey"}]  # no key: a service
    assert move["requestBody"]["required"] is True
    point = move["requestBody"]["content"]["application/json"]["schema"]
    assert point["title"] == "Point" and point["required"] == ["x"]
    assert move["responses"]["200"]["content"]["application/json"]["schema"] == point
    assert move["responses"]["200"]["description"] == "JSON 'Point'"
    assert move["responses"]["default"] == {"$ref": "#/components/responses/Error"}

    order = doc["paths"]["/Shop/order"]["post"]
    assert order["requestBody"]["content"]["application/json"]["schema"]["title"] == "Order"
    listed = order["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}
    assert doc["components"]["schemas"]["Order"]["title"] == "Order"

    double = doc["paths"]["/Shop/double"]["post"]
    assert double["requestBody"]["content"]["application/json"]["schema"] == {"type": "integer"}
    assert double["responses"]["200"]["description"] == "JSON integer"

    echo = doc["paths"]["/Shop/echo"]["post"]  # no annotation: any JSON, the body may be left out
    assert echo["requestBody"] == {"required": False, "content": {"application/json": {"schema": {}}}}
    assert echo["responses"]["200"]["content"]["application/json"]["schema"] == {}
    assert echo["responses"]["200"]["description"] == "application/json"

    send = doc["paths"]["/Shop/move/send"]["post"]
    assert send["operationId"] == "Shop-move-send"
    assert send["parameters"] == [
        {"$ref": "#/components/parameters/idempotencyKey"},
        {"$ref": "#/components/parameters/delay"},
    ]
    assert send["requestBody"] == move["requestBody"]
    assert send["responses"]["202"] == {"$ref": "#/components/responses/Send"}
    components = doc["components"]
    assert components["parameters"]["idempotencyKey"]["name"] == "idempotency-key"
    assert components["parameters"]["idempotencyKey"]["in"] == "header"
    assert components["parameters"]["delay"]["in"] == "query"
    assert components["responses"]["Send"]["content"]["application/json"]["schema"]["required"] == [
        "invocationId",
        "status",
    ]
    assert components["responses"]["Error"]["content"]["application/json"]["schema"]["required"] == ["message"]


def test_objects_and_workflows_have_the_key_in_the_path() -> None:
    counter = VirtualObject("Counter")

    @counter.handler()
    async def add(ctx: Context, by: int) -> int:
        return by

    signup = Workflow("Signup")

    @signup.main()
    async def run(ctx: Context, email: str) -> str:
        return email

    @signup.handler()
    async def status(ctx: Context) -> str:
        return "ok"

    obj = service_openapi(_record(counter))
    _check_shape(obj)
    assert sorted(obj["paths"]) == ["/Counter/{key}/add", "/Counter/{key}/add/send"]
    assert obj["paths"]["/Counter/{key}/add"]["post"]["parameters"] == [
        {"$ref": "#/components/parameters/key"},
        {"$ref": "#/components/parameters/idempotencyKey"},
    ]
    wf = service_openapi(_record(signup))
    _check_shape(wf)
    assert sorted(wf["paths"]) == [
        "/Signup/{key}/run",
        "/Signup/{key}/run/send",
        "/Signup/{key}/status",
        "/Signup/{key}/status/send",
    ]
    # A workflow's key runs it once already: no idempotency key, as on Restate; sends may be delayed.
    assert wf["paths"]["/Signup/{key}/run/send"]["post"]["parameters"] == [
        {"$ref": "#/components/parameters/key"},
        {"$ref": "#/components/parameters/delay"},
    ]


def test_definitions_of_several_schemas_share_components_and_clashes_are_renamed() -> None:
    a = {"type": "array", "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"title": "Item", "type": "string"}}}
    b = {"type": "array", "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"title": "Item", "type": "integer"}}}
    svc = ServiceRecord(
        name="S",
        handlers={"one": "", "two": ""},
        deployment_id="dp_x",
        input_schemas={"one": a, "two": b},
        output_schemas={"one": a},
    )
    doc = service_openapi(svc)
    _check_shape(doc)
    schemas = doc["components"]["schemas"]
    assert schemas == {"Item": {"title": "Item", "type": "string"}, "Item2": {"title": "Item", "type": "integer"}}
    two = doc["paths"]["/S/two"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert two == {"type": "array", "items": {"$ref": "#/components/schemas/Item2"}}
    assert svc.input_schemas["one"] == a  # the record is left as it was


def test_a_record_without_schemas_documents_any_json() -> None:
    svc = ServiceRecord(name="Old", handlers={"h": ""}, deployment_id="dp_old")
    doc = service_openapi(svc)
    _check_shape(doc)
    assert "schemas" not in doc["components"]
    assert doc["paths"]["/Old/h"]["post"]["requestBody"]["required"] is False
    assert (input_description(svc, "h"), output_description(svc, "h")) == ("application/json", "application/json")
