"""The admin API: deployments, services, object state, invocations and operator actions, stats, metrics,
health, step acks, and the web page (routes from `proxy.api.ui`)."""

from __future__ import annotations

from typing import Any, cast

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest, NotFound, ProxyError
from durable_core.records import ACTIONS, STATUSES, DeploymentRecord, InvocationRecord, ServiceRecord
from handlers_sdk.protocol import (
    ACK_PATH,
    PROTOCOL_VERSION,
    AwakeableEntry,
    CallEntry,
    Failure,
    JournalExport,
    JournalItem,
    PromiseGetEntry,
    SleepEntry,
    decode_item,
    encode_export,
)
from proxy.api.acks import append_endpoint
from proxy.api.http import exception_handlers, json_response, read_body
from proxy.api.ui import ui_routes
from proxy.engine.runtime import Runtime

__all__ = ["create_admin", "invocation_view"]

_MAX_ADMIN_BODY = 64 * 1024


class _RegisterRequest(msgspec.Struct, forbid_unknown_fields=False):
    uri: str


class _StateEdit(msgspec.Struct):
    """Body of ``POST /services/{name}/state`` (Restate's shape, with JSON values)."""

    object_key: str
    new_state: dict[str, msgspec.Raw]


_STATUSES = frozenset(STATUSES)
_ACTIONS = ACTIONS
#: Headers an export never shows.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _deployment_view(dep: DeploymentRecord) -> dict[str, Any]:
    return {"id": dep.id, "uri": dep.uri, "mode": dep.mode, "services": dep.services, "created_ms": dep.created_ms}


def _service_view(svc: ServiceRecord) -> dict[str, Any]:
    handlers = [{"name": name, "kind": kind} for name, kind in svc.handlers.items()]
    return {"name": svc.name, "type": svc.type, "handlers": handlers, "deployment_id": svc.deployment_id}


def _flag(value: str | None, name: str) -> bool:
    """A boolean query parameter: absent, ``false``/``0`` or ``true``/``1`` (else BadRequest)."""
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name} must be true or false, got '{value}'")


def _failure_view(failure: Failure) -> dict[str, Any]:
    # Spelled out: the wire struct omits default fields, so code 500 would vanish from the view.
    return {"code": failure.code, "message": failure.message}


def invocation_view(runtime: Runtime, record: InvocationRecord, with_journal: bool = True) -> dict[str, Any]:
    """An invocation as the admin API shows it: status, target, attempts, failure, journal."""
    view: dict[str, Any] = {
        "id": record.id,
        "target": f"{record.service}/{record.key + '/' if record.key else ''}{record.handler}",
        "service": record.service,
        "handler": record.handler,
        "key": record.key,
        "status": record.status,
        "created_ms": record.created_ms,
        "modified_ms": record.modified_ms,
        "deployment_id": record.deployment_id,
        "attempt": record.attempt,
        "retry_count": record.retry_count,
        # A completed invocation keeps the retry time it had when it was killed: nothing is next.
        "next_retry_ms": None if record.is_completed else record.next_retry_ms or None,
        "last_failure": _failure_view(record.last_failure) if record.last_failure else None,
        "idempotency_key": record.idempotency_key,
        "completed_ms": record.completed_ms or None,
    }
    if record.is_completed:
        if record.failure is not None:
            view["failure"] = _failure_view(record.failure)
        else:
            view["result"] = msgspec.Raw(record.result or b"null")
    if (record.status in ("suspended", "paused") and record.waiting_on) or with_journal:
        items = [decode_item(value) for value in runtime.journal(record.id)]
        view["waiting_on"] = _waiting_on(record, items)
        if with_journal:
            view["journal"] = items
    return view


def _waiting_on(record: InvocationRecord, items: list[JournalItem]) -> list[dict[str, Any]]:
    """What a suspended invocation waits for, in words an operator can act on."""
    if record.status != "suspended":
        return []
    by_index = {item.index: item.entry for item in items}
    waits: list[dict[str, Any]] = []
    for index in record.waiting_on:
        entry = by_index.get(index)
        what: dict[str, Any] = {"index": index}
        if isinstance(entry, SleepEntry):
            what.update(kind="timer", wake_at_ms=entry.wake_at_ms)
        elif isinstance(entry, CallEntry):
            what.update(kind="call", target=f"{entry.service}/{entry.handler}", invocation_id=entry.invocation_id)
        elif isinstance(entry, AwakeableEntry):
            what.update(kind="awakeable", awakeable_id=entry.id)
        elif isinstance(entry, PromiseGetEntry):
            what.update(kind="promise", name=entry.name)
        else:
            what.update(kind=type(entry).__name__ if entry else "unknown")
        waits.append(what)
    return waits


def create_admin(runtime: Runtime) -> Starlette:
    """The admin Starlette app (also serves the handlers' step-ack callback)."""

    async def health(request: Request) -> Response:
        return json_response({"status": "ok" if runtime.started else "starting"})

    async def register(request: Request) -> Response:
        body = await read_body(request, _MAX_ADMIN_BODY, runtime.settings.body_read_timeout)
        try:
            parsed = msgspec.json.decode(body, type=_RegisterRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f'expected {{"uri": "http://..."}}: {exc}') from None
        dep, services = await runtime.registry.register(parsed.uri)
        view = _deployment_view(dep)
        view["services"] = [_service_view(s) for s in services]
        return json_response(view, 201)

    async def deployments(request: Request) -> Response:
        return json_response({"deployments": [_deployment_view(d) for d in runtime.registry.deployments.values()]})

    async def deployment(request: Request) -> Response:
        dep = runtime.registry.deployments.get(request.path_params["id"])
        if dep is None:
            raise NotFound(f"deployment '{request.path_params['id']}' not found")
        return json_response(_deployment_view(dep))

    async def remove_deployment(request: Request) -> Response:
        """Restate's ``DELETE /deployments/{id}?force=``: 202 once removed, with what changed."""
        force = _flag(request.query_params.get("force"), "force")
        removal = await runtime.remove_deployment(request.path_params["id"], force)
        view = _deployment_view(removal.deployment)
        view.update(
            removed_services=removal.removed_services,
            moved_services=[_service_view(s) for s in removal.moved_services],
            pinned_invocations=removal.pinned,
        )
        return json_response(view, 202)

    async def services(request: Request) -> Response:
        return json_response({"services": [_service_view(s) for s in runtime.registry.services.values()]})

    async def service(request: Request) -> Response:
        return json_response(_service_view(runtime.registry.service(request.path_params["name"])))

    async def get_state(request: Request) -> Response:
        svc = runtime.registry.service(request.path_params["name"])
        if svc.type == "service":
            raise BadRequest(f"'{svc.name}' is a service: only objects and workflows have state")
        key = request.path_params["key"]
        state = runtime.state(svc.name, key)
        return json_response({"service": svc.name, "key": key, "state": {k: msgspec.Raw(v) for k, v in state.items()}})

    async def set_state(request: Request) -> Response:
        svc = runtime.registry.service(request.path_params["name"])
        if svc.type == "service":
            raise BadRequest(f"'{svc.name}' is a service: only objects and workflows have state")
        body = await read_body(request, runtime.settings.max_body_bytes, runtime.settings.body_read_timeout)
        try:
            edit = msgspec.json.decode(body, type=_StateEdit)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise BadRequest(f'expected {{"object_key": "...", "new_state": {{...}}}}: {exc}') from None
        new_state = {k: bytes(v) for k, v in edit.new_state.items()}
        await runtime.replace_state(svc.name, edit.object_key, new_state)
        return Response(status_code=202)

    async def invocation(request: Request) -> Response:
        record = runtime.get(request.path_params["id"])
        return json_response(invocation_view(runtime, record))

    async def invocation_journal(request: Request) -> Response:
        """Export for local replay (``python -m handlers_sdk replay``): target, input, journal."""
        record = runtime.get(request.path_params["id"])
        completed = record.is_completed
        export = JournalExport(
            protocol_version=PROTOCOL_VERSION,
            invocation_id=record.id,
            target=f"{record.service}/{record.key + '/' if record.key else ''}{record.handler}",
            service=record.service,
            handler=record.handler,
            key=record.key,
            status=record.status,
            random_seed=record.random_seed,
            headers={k: "<redacted>" if k.lower() in _SECRET_HEADERS else v for k, v in record.headers.items()},
            input=msgspec.Raw(runtime.input(record.id)),
            # Stored rows are already wire-format JournalItem JSON.
            journal=cast(Any, [msgspec.Raw(value) for value in runtime.journal(record.id)]),
            failure=record.failure if completed else None,
            result=msgspec.Raw(record.result or b"null"),
        )
        return Response(encode_export(export), media_type="application/json")

    async def stats(request: Request) -> Response:
        return json_response(runtime.stats())

    async def metrics(request: Request) -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def list_invocations(request: Request) -> Response:
        query = request.query_params
        status = query.get("status")
        if status is not None and status not in _STATUSES:
            raise BadRequest(f"unknown status '{status}': use one of {', '.join(sorted(_STATUSES))}")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be between 1 and 1000")
        records, cursor = runtime.list_invocations(
            status, query.get("service"), query.get("handler"), limit, query.get("after"), query.get("before"),
            query.get("order", "asc"),
        )  # fmt: skip
        views = [invocation_view(runtime, r, with_journal=False) for r in records]
        return json_response({"invocations": views, "next": cursor})

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in _ACTIONS:
            raise NotFound(f"unknown action '{action}': use {', '.join(_ACTIONS)}")
        latest = request.query_params.get("deployment") == "latest"
        record = await runtime.act(action, request.path_params["id"], latest=latest)
        if record is None:
            return json_response({"id": request.path_params["id"], "status": "purged"})
        return json_response(invocation_view(runtime, record, with_journal=False))

    async def bulk(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in _ACTIONS:
            raise NotFound(f"unknown action '{action}': use {', '.join(_ACTIONS)}")
        query = request.query_params
        service, handler, status = query.get("service"), query.get("handler"), query.get("status")
        if service is None and handler is None:
            raise BadRequest("bulk actions need a service (and optionally a handler) filter")
        done: list[str] = []
        skipped: list[dict[str, str]] = []
        after: str | None = None
        while True:
            records, after = runtime.list_invocations(
                status or ("completed" if action == "purge" else None), service, handler, 500, after
            )
            for record in records:
                if action != "purge" and record.is_completed:
                    continue
                try:
                    await runtime.act(action, record.id)
                    done.append(record.id)
                except ProxyError as exc:
                    skipped.append({"id": record.id, "reason": exc.message})
            if after is None:
                break
        return json_response({"action": action, "count": len(done), "ids": done, "skipped": skipped})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/deployments", register, methods=["POST"]),
        Route("/deployments", deployments, methods=["GET"]),
        Route("/deployments/{id}", deployment, methods=["GET"]),
        Route("/deployments/{id}", remove_deployment, methods=["DELETE"]),
        Route("/services", services, methods=["GET"]),
        Route("/services/{name}", service, methods=["GET"]),
        Route("/services/{name}/state/{key}", get_state, methods=["GET"]),
        Route("/services/{name}/state", set_state, methods=["POST"]),
        Route("/invocations", list_invocations, methods=["GET"]),
        Route("/invocations/bulk/{action}", bulk, methods=["POST", "PATCH"]),
        Route("/invocations/{id}", invocation, methods=["GET"]),
        Route("/invocations/{id}/{action}", act, methods=["POST", "PATCH"]),
        Route("/invocations/{id}/journal", invocation_journal, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(ACK_PATH, append_endpoint(runtime), methods=["POST"]),
        *ui_routes(),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers("admin"))
