"""``GET /services/{name}/openapi`` on the admin port: an OpenAPI 3.1 document of one service's
ingress paths, built from the handler schemas its deployment announced at discovery.

For each handler there are two operations, as on Restate: ``POST /{service}/{handler}`` (or
``/{service}/{key}/{handler}`` for objects and workflows) calls it and answers its output, and
``.../send`` starts it without waiting (optionally after ``delay``) and answers the invocation id.
Request bodies use the input schemas, 200 responses the output schemas; a handler without a schema
takes or gives any JSON value. Schemas' ``$defs`` move to ``components/schemas``, so that their
``$ref``s resolve inside the document.

`service_openapi` is pure (a `ServiceRecord` in, a JSON-ready dict out); `openapi_routes` serves it.
`input_description` and `output_description` give the one-line forms Restate's admin API shows.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.records import ServiceRecord
from proxy.api.http import json_response
from proxy.engine.runtime import Runtime

__all__ = ["input_description", "openapi_routes", "output_description", "service_openapi"]

_OPENAPI_VERSION = "3.1.0"
_CONTENT_TYPE = "application/json"
_DEFS = "#/$defs/"
_SCHEMAS = "#/components/schemas/"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "An error answered by the proxy, or a handler's terminal failure",
    "properties": {
        "code": {"type": "number", "title": "HTTP-like status code"},
        "message": {"type": "string", "title": "What went wrong"},
        "description": {"type": "string", "title": "More detail, when there is some"},
        "error": {"type": "string", "title": "Machine-readable error kind (proxy errors)"},
        "source": {"type": "string", "title": "Which part of the proxy answered"},
    },
    "required": ["message"],
}
_SEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Send",
    "properties": {
        "invocationId": {"type": "string"},
        "status": {"type": "string", "enum": ["Accepted", "PreviouslyAccepted"]},
        "executionTime": {
            "type": "string",
            "format": "date-time",
            "description": "When a delayed send will start",
        },
    },
    "required": ["invocationId", "status"],
}


def _components() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "parameters": {
            "key": {"name": "key", "in": "path", "required": True, "schema": string},
            "idempotencyKey": {
                "name": "idempotency-key",
                "in": "header",
                "required": False,
                "schema": string,
                "description": "Runs the request at most once per key: a retry with the same key "
                "gets the first request's answer.",
            },
            "delay": {
                "name": "delay",
                "in": "query",
                "required": False,
                "schema": string,
                "example": "10s",
                "description": "Start the invocation after this delay: 10s, 500ms, 2m or ISO 8601 PT10S.",
            },
        },
        "responses": {
            "Error": {
                "description": "Error response",
                "content": {
                    _CONTENT_TYPE: {
                        "schema": copy.deepcopy(_ERROR_SCHEMA),
                        "example": {"code": 500, "message": "Internal server error"},
                    }
                },
            },
            "Send": {
                "description": "The invocation was accepted",
                "content": {
                    _CONTENT_TYPE: {
                        "schema": copy.deepcopy(_SEND_SCHEMA),
                        "example": {"invocationId": "inv_1a2b3c", "status": "Accepted"},
                    }
                },
            },
        },
        "schemas": {},
    }


def _describe(schema: dict[str, Any] | bool | None, default: str) -> str:
    """Restate's one-line form: ``JSON 'Title'``, else ``JSON <type>``, else the content type."""
    if isinstance(schema, dict):
        title, type_ = schema.get("title"), schema.get("type")
        if isinstance(title, str):
            return f"JSON '{title}'"
        if isinstance(type_, str):
            return f"JSON {type_}"
    return default


def input_description(svc: ServiceRecord, handler: str) -> str:
    """The handler's input as Restate's admin API describes it (``input_description``)."""
    return _describe(svc.input_schemas.get(handler), _CONTENT_TYPE)


def output_description(svc: ServiceRecord, handler: str) -> str:
    """The handler's output as Restate's admin API describes it (``output_description``)."""
    return _describe(svc.output_schemas.get(handler), _CONTENT_TYPE)


class _Schemas:
    """Moves each schema's ``$defs`` into ``components/schemas`` (renaming on a clash with a
    different definition) and points its ``$ref``s there."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components

    def add(self, schema: dict[str, Any] | bool | None) -> dict[str, Any] | bool:
        if schema is None:
            return {}
        if isinstance(schema, bool):
            return schema
        schema = copy.deepcopy(schema)
        defs = schema.pop("$defs", None)
        if not isinstance(defs, dict) or not defs:
            return schema
        identity = {name: name for name in defs}
        names: dict[str, str] = {}
        for name, definition in defs.items():
            chosen, n = name, 1
            # The same definition is often in two schemas (one Struct in and out): keep one copy.
            while chosen in self.components and self.components[chosen] != _rewrite(definition, identity):
                n += 1
                chosen = f"{name}{n}"
            names[name] = chosen
            self.components.setdefault(chosen, {})  # taken, in case two names clash below
        for name, definition in defs.items():
            self.components[names[name]] = _rewrite(definition, names)
        rewritten: dict[str, Any] = _rewrite(schema, names)
        return rewritten


def _rewrite(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, names) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS) and ref.removeprefix(_DEFS) in names:
            out["$ref"] = _SCHEMAS + names[ref.removeprefix(_DEFS)]
        return out
    if isinstance(node, list):
        return [_rewrite(v, names) for v in node]
    return node


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def service_openapi(svc: ServiceRecord) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `svc`'s ingress paths (the calls and the sends of each handler)."""
    components = _components()
    schemas = _Schemas(components["schemas"])
    keyed = svc.type != "service"
    root = f"/{svc.name}/{{key}}/" if keyed else f"/{svc.name}/"
    parameters: list[dict[str, str]] = []
    if keyed:
        parameters.append(_ref("parameters", "key"))
    if svc.type != "workflow":  # a workflow's key already runs it once
        parameters.append(_ref("parameters", "idempotencyKey"))
    error = _ref("responses", "Error")
    paths: dict[str, Any] = {}
    for handler in svc.handlers:
        if handler in svc.private_handlers:
            continue  # not callable from the ingress (Restate leaves private handlers out too)
        operation_id = f"{svc.name}-{handler}"
        input_schema = svc.input_schemas.get(handler)
        request_body = {
            "required": input_schema is not None,
            "content": {_CONTENT_TYPE: {"schema": schemas.add(input_schema)}},
        }
        output = {
            "description": output_description(svc, handler),
            "content": {_CONTENT_TYPE: {"schema": schemas.add(svc.output_schemas.get(handler))}},
        }
        paths[root + handler] = {
            "summary": f"Call {svc.name}/{handler}",
            "description": f"Call {svc.name}'s handler {handler} and wait for its output",
            "post": {
                "operationId": operation_id,
                "tags": [svc.name],
                "parameters": list(parameters),
                "requestBody": request_body,
                "responses": {"200": output, "default": error},
            },
        }
        paths[root + handler + "/send"] = {
            "summary": f"Send to {svc.name}/{handler}",
            "description": f"Start {svc.name}'s handler {handler} without waiting for it",
            "post": {
                "operationId": operation_id + "-send",
                "tags": [svc.name],
                "parameters": [*parameters, _ref("parameters", "delay")],
                "requestBody": copy.deepcopy(request_body),
                "responses": {"200": _ref("responses", "Send"), "202": _ref("responses", "Send"), "default": error},
            },
        }
    if not components["schemas"]:
        del components["schemas"]
    return {
        "openapi": _OPENAPI_VERSION,
        "info": {"title": svc.name, "version": svc.deployment_id},
        "paths": paths,
        "components": components,
    }


def openapi_routes(runtime: Runtime) -> list[Route]:
    """``GET /services/{name}/openapi`` (404 for an unknown service), for the admin app."""

    async def openapi(request: Request) -> Response:
        return json_response(service_openapi(runtime.registry.service(request.path_params["name"])))

    return [Route("/services/{name}/openapi", openapi, methods=["GET"])]
