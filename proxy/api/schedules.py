"""The admin API's schedules: ``POST /schedules``, ``GET /schedules``, ``GET/DELETE
/schedules/{id}``, ``POST /schedules/{id}/pause|resume`` and ``PATCH /schedules/{id}``.

Only parsing and views: the rules are `durable_core.schedules`, the use cases
`proxy.engine.schedules.Scheduler`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest, InvalidJson
from durable_core.schedules import ScheduleRecord
from proxy.api.http import json_response, read_body
from proxy.config import parse_duration
from proxy.engine.runtime import Runtime

__all__ = ["schedule_routes", "schedule_view"]

_MAX_BODY = 64 * 1024
_NULL = msgspec.Raw(b"null")


class _CreateSchedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /schedules``."""

    service: str
    handler: str
    key: str = ""
    id: str | None = None
    cron: str = ""
    timezone: str = "UTC"
    #: An interval: a duration ("10s", "500ms", "1h") or seconds.
    every: str | float | None = None
    input: msgspec.Raw = _NULL
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["skip", "once"] = "skip"
    paused: bool = False


class _PatchSchedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PATCH /schedules/{id}``."""

    paused: bool


def _iso(ms: int) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z") if ms else None


def schedule_view(schedule: ScheduleRecord) -> dict[str, Any]:
    """A schedule as the admin API shows it (times in ms and ISO 8601)."""
    return {
        "id": schedule.id,
        "target": f"{schedule.service}/{schedule.key + '/' if schedule.key else ''}{schedule.handler}",
        "service": schedule.service,
        "handler": schedule.handler,
        "key": schedule.key,
        "cron": schedule.cron or None,
        "timezone": schedule.timezone if schedule.cron else None,
        "every_ms": schedule.every_ms or None,
        "input": msgspec.Raw(schedule.input),
        "overlap": schedule.overlap,
        "catch_up": schedule.catch_up,
        "paused": schedule.paused,
        "origin": schedule.origin,
        "created_ms": schedule.created_ms,
        "next_fire_ms": schedule.next_fire_ms or None,
        "next_fire": _iso(schedule.next_fire_ms),
        "last_fire_ms": schedule.last_fire_ms or None,
        "last_fire": _iso(schedule.last_fire_ms),
        "last_invocation_id": schedule.last_invocation_id or None,
        "fired": schedule.fired,
        "skipped": schedule.skipped,
        "missed": schedule.missed,
        "last_error": schedule.last_error or None,
    }


def _decode(body: bytes, type_: type[Any], shape: str) -> Any:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"expected {shape}: {exc}") from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"the body is not JSON: {exc}") from None


def _interval_ms(every: str | float | None) -> int:
    if every is None:
        return 0
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise BadRequest(f"every: {exc}") from None
    if not seconds > 0 or seconds > 366 * 86400:
        raise BadRequest("every must be a duration over 0 and at most 366 days (e.g. 10s, 500ms, 1h)")
    return max(1, round(seconds * 1000))


def schedule_routes(runtime: Runtime) -> list[Route]:
    """The routes of the schedules API."""

    async def create(request: Request) -> Response:
        body = await read_body(request, _MAX_BODY, runtime.settings.body_read_timeout)
        shape = '{"service", "handler", "cron" (with "timezone") or "every", "input", "overlap", "catch_up"}'
        parsed: _CreateSchedule = _decode(body, _CreateSchedule, shape)
        schedule = ScheduleRecord(
            id=parsed.id if parsed.id is not None else "sch_" + secrets.token_hex(8),
            service=parsed.service, handler=parsed.handler, key=parsed.key, cron=parsed.cron.strip(),
            timezone=parsed.timezone, every_ms=_interval_ms(parsed.every), input=bytes(parsed.input),
            overlap=parsed.overlap, catch_up=parsed.catch_up, paused=parsed.paused,
        )  # fmt: skip
        created = await runtime.schedules.create(schedule)
        return json_response(schedule_view(created), 201)

    async def list_all(request: Request) -> Response:
        return json_response({"schedules": [schedule_view(s) for s in runtime.schedules.list()]})

    async def get(request: Request) -> Response:
        return json_response(schedule_view(runtime.schedules.get(request.path_params["id"])))

    async def delete(request: Request) -> Response:
        deleted = await runtime.schedules.delete(request.path_params["id"])
        return json_response(schedule_view(deleted))

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise BadRequest(f"unknown action '{action}': use pause or resume")
        changed = await runtime.schedules.set_paused(request.path_params["id"], action == "pause")
        return json_response(schedule_view(changed))

    async def patch(request: Request) -> Response:
        body = await read_body(request, _MAX_BODY, runtime.settings.body_read_timeout)
        parsed: _PatchSchedule = _decode(body, _PatchSchedule, '{"paused": true or false}')
        changed = await runtime.schedules.set_paused(request.path_params["id"], parsed.paused)
        return json_response(schedule_view(changed))

    return [
        Route("/schedules", create, methods=["POST"]),
        Route("/schedules", list_all, methods=["GET"]),
        Route("/schedules/{id}", get, methods=["GET"]),
        Route("/schedules/{id}", delete, methods=["DELETE"]),
        Route("/schedules/{id}", patch, methods=["PATCH"]),
        Route("/schedules/{id}/{action}", act, methods=["POST"]),
    ]
