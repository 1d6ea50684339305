"""The admin API: deployments, services, invocation inspection, stats, health, step acks."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers_sdk.protocol import ACK_PATH, JournalItem
from proxy.callbacks import append_endpoint
from proxy.errors import BadRequest, NotFound
from proxy.journal import DeploymentRecord, InvocationRecord, ServiceRecord
from proxy.keys import journal_prefix
from proxy.runtime import Runtime
from proxy.store import DBS
from proxy.web import exception_handlers, json_response, read_body

__all__ = ["create_admin", "invocation_view"]

_MAX_ADMIN_BODY = 64 * 1024
_journal_item = msgspec.json.Decoder(JournalItem)


class _RegisterRequest(msgspec.Struct, forbid_unknown_fields=False):
    uri: str


def _deployment_view(dep: DeploymentRecord) -> dict[str, Any]:
    return {"id": dep.id, "uri": dep.uri, "mode": dep.mode, "services": dep.services, "created_ms": dep.created_ms}


def _service_view(svc: ServiceRecord) -> dict[str, Any]:
    handlers = [{"name": name, "kind": kind} for name, kind in svc.handlers.items()]
    return {"name": svc.name, "type": svc.type, "handlers": handlers, "deployment_id": svc.deployment_id}


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
        "last_failure": msgspec.to_builtins(record.last_failure) if record.last_failure else None,
        "idempotency_key": record.idempotency_key,
        "completed_ms": record.completed_ms or None,
    }
    if record.is_completed:
        if record.failure is not None:
            view["failure"] = msgspec.to_builtins(record.failure)
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
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
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

    async def invocation(request: Request) -> Response:
        record = runtime.get(request.path_params["id"])
        return json_response(invocation_view(runtime, record))

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
        Route("/invocations/{id}", invocation, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route(ACK_PATH, append_endpoint(runtime), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers("admin"))
