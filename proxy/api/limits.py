"""The admin API's concurrency and rate limits: ``GET``, ``PUT`` and ``DELETE``
``/services/{name}/limits`` (the rules are `durable_core.flow`'s).

``GET`` shows the limits the service's code declares, an operator's override, the limits that
apply (the override if set, else the code's) and the limit groups in use (slots taken, invocations
queued). ``PUT`` sets the override (the whole `ServiceLimits`, replacing the code's) and starts at
once what a raised limit lets go; ``DELETE`` goes back to the code's limits.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest
from durable_core.flow import FlowGroup, group_label
from durable_core.records import InvocationRecord, ServiceLimits
from handlers_sdk.protocol import Limit
from proxy.api.http import json_response, read_body
from proxy.engine.runtime import Runtime

__all__ = ["limit_fields", "limits_routes"]

_MAX_BODY = 64 * 1024
_LIMIT_FIELDS = frozenset(Limit.__struct_fields__)
_SERVICE_FIELDS = frozenset(ServiceLimits.__struct_fields__)
_EXAMPLE = '{"handlers": {"greet": {"concurrency": 2, "rate": 5, "period_ms": 1000}}}'


def _check_fields(value: object, allowed: frozenset[str], where: str) -> None:
    """BadRequest for a field a limit does not have (a typo must not pass as "no limit")."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)} in {where}: use {', '.join(sorted(allowed))}")


def _parse(body: bytes) -> ServiceLimits:
    """A `ServiceLimits` from a request body, or BadRequest saying what is wrong."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequest(f"expected a JSON object of limits, e.g. {_EXAMPLE}: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest(f"expected a JSON object of limits, e.g. {_EXAMPLE}")
    _check_fields(raw, _SERVICE_FIELDS, "the limits")
    for name in ("service", "key"):
        _check_fields(raw.get(name), _LIMIT_FIELDS, name)
    for name in ("handlers", "handler_keys"):
        table = raw.get(name)
        if isinstance(table, dict):
            for handler, limit in table.items():
                _check_fields(limit, _LIMIT_FIELDS, f"{name}.{handler}")
    try:
        return msgspec.convert(raw, ServiceLimits)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid limits: {exc}") from None


def _limits_view(limits: ServiceLimits | None) -> Any:
    return None if limits is None else msgspec.to_builtins(limits)


def _group_view(state: FlowGroup) -> dict[str, Any]:
    return {**group_label(state.group), "running": state.running, "queued": state.queued}


def limit_fields(runtime: Runtime, record: InvocationRecord) -> dict[str, Any]:
    """What an invocation view shows of its limits: its limit key, the groups it holds a slot of,
    and, waiting for a slot, which group's and its place in line (1: next)."""
    view: dict[str, Any] = {}
    if record.limit_key:
        view["limit_key"] = record.limit_key
    if record.flow_slots:
        view["limit_slots"] = [group_label(group) for group in record.flow_slots]
    if record.flow_wait and record.status == "pending":
        view["waiting_for_limit"] = group_label(record.flow_wait)
        view["queue_position"] = runtime.queue_position(record)
    if record.flow_throttled and record.status == "scheduled":
        view["rate_limited_until_ms"] = record.scheduled_at_ms
    return view


def limits_routes(runtime: Runtime) -> list[Route]:
    """The routes of ``/services/{name}/limits``."""

    def view(name: str) -> dict[str, Any]:
        code, override, groups = runtime.limits(name)
        effective = override if override is not None else code
        return {
            "service": name,
            "effective": _limits_view(effective),
            "code": _limits_view(code),
            "override": _limits_view(override),
            "groups": [_group_view(state) for state in groups],
        }

    async def get_limits(request: Request) -> Response:
        return json_response(view(request.path_params["name"]))

    async def put_limits(request: Request) -> Response:
        name = request.path_params["name"]
        runtime.registry.service(name)  # 404 before reading a body for nothing
        body = await read_body(request, _MAX_BODY, runtime.settings.body_read_timeout)
        await runtime.set_limits(name, _parse(body))
        return json_response(view(name))

    async def delete_limits(request: Request) -> Response:
        name = request.path_params["name"]
        await runtime.set_limits(name, None)
        return json_response(view(name))

    return [
        Route("/services/{name}/limits", get_limits, methods=["GET"]),
        Route("/services/{name}/limits", put_limits, methods=["PUT"]),
        Route("/services/{name}/limits", delete_limits, methods=["DELETE"]),
    ]
