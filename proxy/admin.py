"""The admin API: deployments, services, invocation inspection, stats, health, step acks."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers_sdk.protocol import ACK_PATH, Failure, JournalItem
from proxy.callbacks import append_endpoint
from proxy.errors import BadRequest, NotFound
from proxy.journal import DeploymentRecord, InvocationRecord, ServiceRecord
from proxy.keys import journal_prefix
from proxy.objects import read_state, replace_state
from proxy.runtime import Runtime
from proxy.store import DBS
from proxy.web import exception_handlers, json_response, read_body

__all__ = ["create_admin", "invocation_view"]

_MAX_ADMIN_BODY = 64 * 1024
_journal_item = msgspec.json.Decoder(JournalItem)


class _RegisterRequest(msgspec.Struct, forbid_unknown_fields=False):
    uri: str


class _StateEdit(msgspec.Struct):
    """Body of ``POST /services/{name}/state`` (Restate's shape, with JSON values)."""

    object_key: str
    new_state: dict[str, msgspec.Raw]


def _deployment_view(dep: DeploymentRecord) -> dict[str, Any]:
    return {"id": dep.id, "uri": dep.uri, "mode": dep.mode, "services": dep.services, "created_ms": dep.created_ms}


def _service_view(svc: ServiceRecord) -> dict[str, Any]:
    handlers = [{"name": name, "kind": kind} for name, kind in svc.handlers.items()]
    return {"name": svc.name, "type": svc.type, "handlers": handlers, "deployment_id": svc.deployment_id}


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
        "next_retry_ms": record.next_retry_ms or None,
        "last_failure": _failure_view(record.last_failure) if record.last_failure else None,
        "idempotency_key": record.idempotency_key,
        "completed_ms": record.completed_ms or None,
    }
    if record.is_completed:
        if record.failure is not None:
            view["failure"] = _failure_view(record.failure)
        else:
            view["result"] = msgspec.Raw(record.result or b"null")
    if with_journal:
        rows = runtime.store.scan_prefix("journal", journal_prefix(record.id))
        view["journal"] = [_journal_item.decode(value) for _, value in rows]
    return view


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

    async def services(request: Request) -> Response:
        return json_response({"services": [_service_view(s) for s in runtime.registry.services.values()]})

    async def service(request: Request) -> Response:
        return json_response(_service_view(runtime.registry.service(request.path_params["name"])))

    async def get_state(request: Request) -> Response:
        svc = runtime.registry.service(request.path_params["name"])
        if svc.type == "service":
            raise BadRequest(f"'{svc.name}' is a service: only objects and workflows have state")
        key = request.path_params["key"]
        state = read_state(runtime.store, svc.name, key)
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
        await runtime.writer.submit(lambda txn: replace_state(txn, svc.name, edit.object_key, new_state))
        return Response(status_code=202)

    async def invocation(request: Request) -> Response:
        record = runtime.get(request.path_params["id"])
        return json_response(invocation_view(runtime, record))

    async def invocation_journal(request: Request) -> Response:
        """Export for local replay (``python -m handlers_sdk replay``): target, input, journal."""
        from handlers_sdk.protocol import PROTOCOL_VERSION
        from proxy.keys import invocation_key

        record = runtime.get(request.path_params["id"])
        rows = runtime.store.scan_prefix("journal", journal_prefix(record.id))
        secret = {"authorization", "proxy-authorization", "cookie"}
        export: dict[str, Any] = {
            "format": "durable-proxy.journal/1",
            "protocol_version": PROTOCOL_VERSION,
            "invocation_id": record.id,
            "target": f"{record.service}/{record.key + '/' if record.key else ''}{record.handler}",
            "service": record.service,
            "handler": record.handler,
            "key": record.key,
            "status": record.status,
            "random_seed": record.random_seed,
            "headers": {k: "<redacted>" if k.lower() in secret else v for k, v in record.headers.items()},
            "input": msgspec.Raw(runtime.store.get("inputs", invocation_key(record.id)) or b"null"),
            # Stored rows are already wire-format JournalItem JSON.
            "journal": [msgspec.Raw(value) for _, value in rows],
        }
        if record.is_completed:
            if record.failure is not None:
                export["failure"] = {"code": record.failure.code, "message": record.failure.message}
            else:
                export["result"] = msgspec.Raw(record.result or b"null")
        return json_response(export)

    async def stats(request: Request) -> Response:
        counts = {name: runtime.store.count(name) for name in DBS}
        return json_response(
            {
                "counts": counts,
                "storage": runtime.store.usage(),
                "writer": {"commits": runtime.writer.commits, "batched_writes": runtime.writer.batched},
                "running_attempts": len(runtime.invoker.active),
            }
        )

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/deployments", register, methods=["POST"]),
        Route("/deployments", deployments, methods=["GET"]),
        Route("/deployments/{id}", deployment, methods=["GET"]),
        Route("/services", services, methods=["GET"]),
        Route("/services/{name}", service, methods=["GET"]),
        Route("/services/{name}/state/{key}", get_state, methods=["GET"]),
        Route("/services/{name}/state", set_state, methods=["POST"]),
        Route("/invocations/{id}", invocation, methods=["GET"]),
        Route("/invocations/{id}/journal", invocation_journal, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route(ACK_PATH, append_endpoint(runtime), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers("admin"))
