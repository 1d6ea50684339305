"""Handler schemas in discovery: the SDK derives JSON Schemas of each handler's input and output from
its annotations, and manifests and service records without them still decode."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, TypedDict

import httpx
import msgspec

from durable_core.records import ServiceRecord, decode_record, encode_record
from handlers_sdk import Context, Service, VirtualObject
from handlers_sdk.protocol import HandlerInfo, Manifest, ServiceInfo, decode_manifest, encode
from handlers_sdk.server import HandlerApp
from handlers_sdk.service import json_schema


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Order:
    item: str
    quantity: int


class Contact(TypedDict):
    name: str
    email: str


class Tree(msgspec.Struct):
    value: int
    children: list[Tree] = []


class FakePydanticModel:
    """Stands in for a pydantic model (pydantic is not installed here): only the duck type matters."""

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return {"title": "FakePydanticModel", "type": "object", "properties": {"a": {"type": "integer"}}}


def _service() -> Service:
    svc = Service("Typed")

    @svc.handler()
    async def struct(ctx: Context, p: Point) -> Point:
        return p

    @svc.handler()
    async def dataclass(ctx: Context, order: Order) -> list[Order]:
        return [order]

    @svc.handler()
    async def typed_dict(ctx: Context, contact: Contact) -> str:
        return contact["name"]

    @svc.handler()
    async def builtin(ctx: Context, n: int) -> bool:
        return n > 0

    @svc.handler()
    async def optional(ctx: Context, names: list[str] | None) -> int | None:
        return len(names) if names else None

    @svc.handler()
    async def bare(ctx, value):  # type: ignore[no-untyped-def]
        return value

    @svc.handler()
    async def no_input(ctx: Context) -> None:
        return None

    return svc


def _discovery(app: HandlerApp) -> dict[str, Any]:
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as client:
            return await client.get("/discovery")

    response = asyncio.run(get())
    assert response.status_code == 200
    parsed: dict[str, Any] = response.json()
    return parsed


def _handlers() -> dict[str, dict[str, Any]]:
    manifest = _discovery(HandlerApp([_service()]))
    return {h["name"]: h for h in manifest["services"][0]["handlers"]}


def test_a_struct_is_described_by_its_own_schema_at_the_top() -> None:
    handler = _handlers()["struct"]
    point = {
        "title": "Point",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
    }
    assert handler["input_schema"] == point
    assert handler["output_schema"] == point


def test_dataclass_typed_dict_and_builtins() -> None:
    handlers = _handlers()
    assert handlers["dataclass"]["input_schema"] == {
        "title": "Order",
        "type": "object",
        "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}},
        "required": ["item", "quantity"],
    }
    out = handlers["dataclass"]["output_schema"]
    assert out["type"] == "array" and out["items"] == {"$ref": "#/$defs/Order"}
    assert out["$defs"]["Order"]["title"] == "Order"
    assert handlers["typed_dict"]["input_schema"]["title"] == "Contact"
    assert sorted(handlers["typed_dict"]["input_schema"]["required"]) == ["email", "name"]
    assert handlers["typed_dict"]["output_schema"] == {"type": "string"}
    assert handlers["builtin"]["input_schema"] == {"type": "integer"}
    assert handlers["builtin"]["output_schema"] == {"type": "boolean"}


def test_lists_and_optionals() -> None:
    handler = _handlers()["optional"]
    assert handler["input_schema"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}
    assert handler["output_schema"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_no_annotation_announces_no_schema_and_no_input_no_input_schema() -> None:
    handlers = _handlers()
    assert "input_schema" not in handlers["bare"] and "output_schema" not in handlers["bare"]
    assert "input_schema" not in handlers["no_input"]
    assert handlers["no_input"]["output_schema"] == {"type": "null"}


def test_a_recursive_struct_keeps_the_definition_it_refers_to() -> None:
    schema = json_schema(Tree)
    assert isinstance(schema, dict)
    assert schema["title"] == "Tree"
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert schema["$defs"]["Tree"]["title"] == "Tree"


def test_pydantic_models_give_their_own_schema_and_unknown_types_none() -> None:
    assert json_schema(FakePydanticModel) == FakePydanticModel.model_json_schema()
    assert json_schema(Any) is None
    assert json_schema(object) is None  # neither msgspec nor (absent) pydantic knows it: any JSON


def test_object_handlers_carry_kind_and_schemas() -> None:
    obj = VirtualObject("Counter")

    @obj.handler()
    async def add(ctx: Context, by: int) -> int:
        return by

    manifest = _discovery(HandlerApp([obj]))
    assert manifest["services"] == [
        {
            "name": "Counter",
            "type": "object",
            "handlers": [
                {
                    "name": "add",
                    "kind": "exclusive",
                    "input_schema": {"type": "integer"},
                    "output_schema": {"type": "integer"},
                }
            ],
        }
    ]


def test_the_manifest_round_trips_with_schemas() -> None:
    info = _service().info()
    assert decode_manifest(encode(Manifest(services=[info]))) == Manifest(services=[info])


def test_an_older_manifest_without_schemas_still_decodes() -> None:
    old = b'{"services":[{"name":"Counter","type":"object","handlers":[{"name":"add","kind":"exclusive"}]}]}'
    manifest = decode_manifest(old)
    assert manifest.services == [
        ServiceInfo(name="Counter", type="object", handlers=[HandlerInfo(name="add", kind="exclusive")])
    ]
    assert manifest.services[0].handlers[0].input_schema is None
    # Another SDK may announce the boolean schemas of JSON Schema.
    other = decode_manifest(b'{"services":[{"name":"S","handlers":[{"name":"h","input_schema":true}]}]}')
    assert other.services[0].handlers[0].input_schema is True


class _OldServiceRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`ServiceRecord` as stored before handler schemas."""

    name: str
    type: str = "service"
    handlers: dict[str, str] = {}
    deployment_id: str


def test_a_stored_service_record_without_schemas_still_decodes() -> None:
    old = msgspec.msgpack.encode(_OldServiceRecord(name="A", handlers={"h": ""}, deployment_id="dp_1"))
    record = decode_record(old, ServiceRecord)
    assert record == ServiceRecord(name="A", handlers={"h": ""}, deployment_id="dp_1")
    assert (record.input_schemas, record.output_schemas) == ({}, {})
    # and one without schemas is stored as before
    assert encode_record(record) == old


def test_a_service_record_keeps_schemas_in_the_store() -> None:
    schema = {"title": "Point", "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    record = ServiceRecord(
        name="A",
        handlers={"h": "", "g": ""},
        deployment_id="dp_1",
        input_schemas={"h": schema},
        output_schemas={"h": {"type": "number"}, "g": True},
    )
    assert decode_record(encode_record(record), ServiceRecord) == record
    assert json.loads(msgspec.json.encode(record))["input_schemas"] == {"h": schema}
