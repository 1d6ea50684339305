"""The admin API: deployments, services, object state, invocations and operator actions, stats, metrics,
health, and the web page (routes from `proxy.api.ui`). The step acks have an app and a listener of their own
(`proxy.api.acks`)."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from typing import Any, cast

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest, NotFound, ProxyError
from durable_core.records import ACTIONS, STATUSES, DeploymentRecord, InvocationRecord, ServiceRecord
from handlers_sdk.protocol import (
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
from proxy import __version__
from proxy.api.http import exception_handlers, json_response, read_body
from proxy.api.limits import limit_fields, limits_routes
from proxy.api.openapi import openapi_routes
from proxy.api.query import query_endpoint, state_version
from proxy.api.schedules import schedule_routes
from proxy.api.ui import ui_routes
from proxy.config import Settings
from proxy.engine.runtime import Runtime

__all__ = ["ADMIN_API_VERSIONS", "RESTATE_VERSION", "create_admin", "invocation_view"]

_MAX_ADMIN_BODY = 64 * 1024
#: The Restate release whose admin API this one follows; `/version` answers it, with the proxy's
#: own version as semver build metadata (Restate's CLI picks its queries by this version).
RESTATE_VERSION = "1.7.0"
#: Admin API versions served: Restate's CLI asks for the highest one both sides know and prefixes
#: its paths with it (``/v4/services``); every version here is served by the same routes.
ADMIN_API_VERSIONS = (1, 4)
_VERSION_PREFIX = re.compile(r"^/v([0-9]+)(?=/|$)")


class _RegisterRequest(msgspec.Struct, forbid_unknown_fields=False):
    """Body of ``POST /deployments`` (Restate's HTTP deployment request; Lambda is not supported)."""

    uri: str
    force: bool | None = None
    breaking: bool = False
    dry_run: bool = False
    use_http_11: bool = False
    additional_headers: dict[str, str] | None = None


class _MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``PATCH /deployments/{id}``: where the deployment is served now."""

    uri: str


#: Ids of pinned invocations a deployment's view lists (the counts cover all of them).
_PINNED_SHOWN = 50


def _pinned_view(records: list[InvocationRecord]) -> dict[str, Any]:
    """The invocations not completed pinned to a deployment: how many, by status, the first ids."""
    by_status: dict[str, int] = {}
    for record in records:
        by_status[record.status] = by_status.get(record.status, 0) + 1
    return {"count": len(records), "by_status": by_status, "ids": [r.id for r in records[:_PINNED_SHOWN]]}


class _StateEdit(msgspec.Struct, forbid_unknown_fields=False):
    """Body of ``POST /services/{name}/state``: Restate's shape, values as byte arrays (Restate's
    ``Bytes``) holding JSON; the proxy also takes a JSON value itself where it is not a byte array."""

    object_key: str
    new_state: dict[str, msgspec.Raw]
    version: str | None = None


_STATUSES = frozenset(STATUSES)
_ACTIONS = ACTIONS
#: Headers an export never shows.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


_SERVICE_TY = {"service": "Service", "object": "VirtualObject", "workflow": "Workflow"}
_HANDLER_TY = {"exclusive": "Exclusive", "shared": "Shared", "workflow": "Workflow"}
#: What Restate says of a handler's input and output when the deployment sent no schema.
_INPUT_DESCRIPTION = 'one of ["none", "value of content-type \'application/json\'"]'
_OUTPUT_DESCRIPTION = "value of content-type 'application/json'"


def _check_uri(uri: str) -> None:
    """BadRequest unless `uri` is an absolute http(s) URL with a host (``http://[::1`` raised
    httpx.InvalidURL deep in discovery: a 500)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port_ok = parts.port != 0  # .port raises ValueError for a port that is no number in range
    except ValueError as exc:
        raise BadRequest(f"uri {uri[:200]!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or any(c in uri for c in " \t\r\n"):
        raise BadRequest(f"uri {uri[:200]!r} must be an http:// or https:// URL with a host")


def _friendly(seconds: float) -> str:
    """A duration in the friendly format Restate's admin API uses (``1d``, ``1h``, ``30s``, ``500ms``)."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _timestamp(ms: int) -> str:
    """RFC 3339, UTC, milliseconds (Restate's ``created_at``)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _handler_view(svc: ServiceRecord, name: str, kind: str) -> dict[str, Any]:
    """A handler as Restate's ``HandlerMetadata``, with the JSON schemas discovery announced."""
    view: dict[str, Any] = {"name": name}
    if kind in _HANDLER_TY:
        view["ty"] = _HANDLER_TY[kind]
    public = name not in svc.private_handlers
    view.update(public=public, input_description=_INPUT_DESCRIPTION, output_description=_OUTPUT_DESCRIPTION)
    if name in svc.input_schemas:
        view["input_json_schema"] = svc.input_schemas[name]
    if name in svc.output_schemas:
        view["output_json_schema"] = svc.output_schemas[name]
    return view


def _service_view(svc: ServiceRecord, settings: Settings) -> dict[str, Any]:
    """A service as Restate's admin API shows it (``ServiceMetadata``)."""
    retention = _friendly(settings.retention)
    view: dict[str, Any] = {
        "name": svc.name,
        "ty": _SERVICE_TY.get(svc.type, svc.type),
        "handlers": [_handler_view(svc, name, kind) for name, kind in svc.handlers.items()],
        "deployment_id": svc.deployment_id,
        "revision": 1,
        "public": not svc.ingress_private,
        "idempotency_retention": retention,
        "journal_retention": retention,
        "inactivity_timeout": _friendly(settings.inactivity_timeout),
        "abort_timeout": _friendly(settings.inactivity_timeout),
        "enable_lazy_state": False,
        "retry_policy": {
            "initial_interval": _friendly(settings.retry_initial_interval),
            "exponentiation_factor": settings.retry_factor,
            "max_attempts": settings.retry_max_attempts or None,
            "max_interval": _friendly(settings.retry_max_interval),
            "on_max_attempts": "Pause",
        },
    }
    if svc.type == "workflow":
        view["workflow_completion_retention"] = retention
    return view


def _deployment_view(
    dep: DeploymentRecord, services: list[ServiceRecord] | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """A deployment as Restate's admin API shows it: with `services` (and `settings`), the detailed
    form (``services`` as full service views), else the list form (``services`` as name and revision).
    ``mode`` (``ack`` or ``suspend``) is the proxy's own."""
    view: dict[str, Any] = {
        "id": dep.id,
        "uri": dep.uri,
        "protocol_type": "RequestResponse",
        "http_version": "HTTP/1.1",
        "created_at": _timestamp(dep.created_ms),
        "min_protocol_version": PROTOCOL_VERSION,
        "max_protocol_version": PROTOCOL_VERSION,
        "mode": dep.mode,
    }
    if services is not None and settings is not None:
        view["services"] = [_service_view(s, settings) for s in services]
    else:
        view["services"] = [{"name": name, "revision": 1} for name in dep.services]
    return view


def _state_value(name: str, raw: msgspec.Raw) -> bytes:
    """One value of a state edit: Restate's byte array (of JSON), or a JSON value itself."""
    try:
        octets = msgspec.json.decode(raw, type=list[int])
    except msgspec.ValidationError:
        return bytes(raw)
    if not all(0 <= o <= 255 for o in octets):
        return bytes(raw)
    value = bytes(octets)
    try:
        msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise BadRequest(f"state '{name}': the bytes are not JSON (the proxy keeps state as JSON)") from None
    return value


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
        **limit_fields(runtime, record),
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
    """The admin Starlette app (the step-ack callback is apart: `proxy.api.acks.create_callback`)."""

    async def health(request: Request) -> Response:
        return json_response({"status": "ok" if runtime.started else "starting"})

    async def register(request: Request) -> Response:
        body = await read_body(
            request, _MAX_ADMIN_BODY, runtime.settings.body_read_timeout, runtime.settings.max_drain_bytes
        )
        try:
            parsed = msgspec.json.decode(body, type=_RegisterRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f'expected {{"uri": "http://..."}}: {exc}') from None
        _check_uri(parsed.uri)
        known = any(d.uri == parsed.uri.rstrip("/") for d in runtime.registry.deployments.values())
        dep, services = await runtime.registry.register(parsed.uri, dry_run=parsed.dry_run)
        view = _deployment_view(dep, services, runtime.settings)
        # Restate's codes: 201 for a new deployment, 200 for one updated in place (also in a dry run).
        return json_response(view, 200 if known else 201)

    async def deployments(request: Request) -> Response:
        return json_response({"deployments": [_deployment_view(d) for d in runtime.registry.deployments.values()]})

    async def deployment(request: Request) -> Response:
        dep = runtime.registry.deployments.get(request.path_params["id"])
        if dep is None:
            raise NotFound(f"deployment '{request.path_params['id']}' not found")
        services = [s for s in runtime.registry.services.values() if s.deployment_id == dep.id]
        view = _deployment_view(dep, services, runtime.settings)
        view["pinned"] = _pinned_view(runtime.pinned(dep.id))
        return json_response(view)

    async def move_deployment(request: Request) -> Response:
        """``PATCH /deployments/{id}`` with ``{"uri": ...}``: the same code, served elsewhere."""
        body = await read_body(request, _MAX_ADMIN_BODY, runtime.settings.body_read_timeout)
        try:
            parsed = msgspec.json.decode(body, type=_MoveRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f'expected {{"uri": "http://..."}}: {exc}') from None
        _check_uri(parsed.uri)
        moved = await runtime.move_deployment(request.path_params["id"], parsed.uri)
        services = [s for s in runtime.registry.services.values() if s.deployment_id == moved.id]
        view = _deployment_view(moved, services, runtime.settings)
        view["pinned"] = _pinned_view(runtime.pinned(moved.id))
        return json_response(view)

    async def remove_deployment(request: Request) -> Response:
        """Restate's ``DELETE /deployments/{id}?force=``: 202 once removed, with what changed."""
        force = _flag(request.query_params.get("force"), "force")
        removal = await runtime.remove_deployment(request.path_params["id"], force)
        view = _deployment_view(removal.deployment)
        view.update(
            removed_services=removal.removed_services,
            moved_services=[_service_view(s, runtime.settings) for s in removal.moved_services],
            pinned_invocations=removal.pinned,
        )
        return json_response(view, 202)

    async def services(request: Request) -> Response:
        views = [_service_view(s, runtime.settings) for s in runtime.registry.services.values()]
        return json_response({"services": views})

    async def service(request: Request) -> Response:
        return json_response(_service_view(runtime.registry.service(request.path_params["name"]), runtime.settings))

    async def identity(request: Request) -> Response:
        """The public key that signs requests to handlers: what they put in ``identity_keys``."""
        return json_response(runtime.identity.view())

    async def version(request: Request) -> Response:
        """Restate's ``GET /version``: the admin API versions served (Restate's CLI checks them)."""
        return json_response({
            "version": f"{RESTATE_VERSION}+durable-proxy.{__version__}",
            "min_admin_api_version": ADMIN_API_VERSIONS[0],
            "max_admin_api_version": ADMIN_API_VERSIONS[1],
            "ingress_endpoint": f"http://{runtime.settings.host}:{runtime.settings.ingress_port}/",
            "features": {},
        })  # fmt: skip

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
        body = await read_body(
            request,
            runtime.settings.max_body_bytes,
            runtime.settings.body_read_timeout,
            runtime.settings.max_drain_bytes,
        )
        try:
            edit = msgspec.json.decode(body, type=_StateEdit)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f'expected {{"object_key": "...", "new_state": {{...}}}}: {exc}') from None
        new_state = {k: _state_value(k, v) for k, v in edit.new_state.items()}
        if edit.version is not None:
            # Restate's optimistic check, also made inside the write (`Runtime.replace_state_if`).
            await runtime.replace_state_if(svc.name, edit.object_key, new_state, edit.version, state_version)
        else:
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

    async def cluster(request: Request) -> Response:
        return json_response(runtime.cluster())

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

    async def delete_invocation(request: Request) -> Response:
        """Restate's older ``DELETE /invocations/{id}?mode=cancel|kill|purge`` (cancel by default): 202."""
        mode = request.query_params.get("mode", "cancel").lower()
        if mode not in ("cancel", "kill", "purge"):
            raise BadRequest(f"unknown mode '{mode}': use cancel, kill or purge")
        await runtime.act(mode, request.path_params["id"])
        return Response(status_code=202)

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
        Route("/version", version, methods=["GET"]),
        Route("/identity", identity, methods=["GET"]),
        Route("/query", query_endpoint(runtime), methods=["POST"]),
        Route("/deployments", register, methods=["POST"]),
        Route("/deployments", deployments, methods=["GET"]),
        Route("/deployments/{id}", deployment, methods=["GET"]),
        Route("/deployments/{id}", remove_deployment, methods=["DELETE"]),
        Route("/deployments/{id}", move_deployment, methods=["PATCH"]),
        Route("/services", services, methods=["GET"]),
        Route("/services/{name}", service, methods=["GET"]),
        *limits_routes(runtime),
        Route("/services/{name}/state/{key}", get_state, methods=["GET"]),
        Route("/services/{name}/state", set_state, methods=["POST"]),
        Route("/invocations", list_invocations, methods=["GET"]),
        Route("/invocations/bulk/{action}", bulk, methods=["POST", "PATCH"]),
        Route("/invocations/{id}", invocation, methods=["GET"]),
        Route("/invocations/{id}", delete_invocation, methods=["DELETE"]),
        Route("/invocations/{id}/{action}", act, methods=["POST", "PATCH"]),
        Route("/invocations/{id}/journal", invocation_journal, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/cluster", cluster, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *openapi_routes(runtime),
        *schedule_routes(runtime),
        *ui_routes(),
    ]
    app = Starlette(routes=routes, exception_handlers=exception_handlers("admin"))
    app.add_middleware(_ApiVersionPrefix)
    return app


class _ApiVersionPrefix:
    """Serves ``/v{N}/...`` (N an admin API version in `ADMIN_API_VERSIONS`) as ``/...``: Restate's
    CLI prefixes every path with the version it chose from ``/version``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            match = _VERSION_PREFIX.match(scope["path"])
            if match and ADMIN_API_VERSIONS[0] <= int(match.group(1)) <= ADMIN_API_VERSIONS[1]:
                raw = scope.get("raw_path") or scope["path"].encode()
                scope = {**scope, "path": scope["path"][match.end() :] or "/", "raw_path": raw[match.end() :] or b"/"}
        await self.app(scope, receive, send)
