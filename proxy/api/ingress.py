"""The ingress API, with Restate's paths and status codes (tabled in the README's "Ingress API")."""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import BadRequest, NotFound, NotReady, error_body
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import Failure
from proxy.api.http import check_json, exception_handlers, json_response, read_body
from proxy.config import parse_duration
from proxy.engine.runtime import Runtime, Target

__all__ = ["create_ingress", "outcome_response", "parse_delay"]

#: Request headers that are not forwarded to the handler (Restate drops the same ones).
_NOT_FORWARDED = frozenset(
    {"connection", "host", "idempotency-key", "content-length", "transfer-encoding", "keep-alive", "expect"}
)
_MAX_FORWARDED = 64


_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)


def parse_delay(text: str) -> int:
    """Milliseconds from Restate's ``delay`` forms: ``10s``, ``500ms``, ``2m`` or ISO ``PT10S``."""
    match = _ISO_DURATION.match(text.strip())
    if match is not None and text.strip().upper() not in ("P", "PT"):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return int(((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000)
    try:
        return int(parse_duration(text) * 1000)
    except ValueError:
        raise BadRequest(f"bad delay {text!r}: use e.g. 10s, 500ms, 2m or PT10S") from None


def outcome_response(record: InvocationRecord) -> Response:
    """The answer for a completed invocation: its JSON result (200) or its terminal failure."""
    headers = {"x-restate-id": record.id}
    if record.failure is not None:
        code = record.failure.code
        status = code if 400 <= code <= 599 else 500
        headers["x-restate-error-source"] = "invocation"
        body = error_body(code, "terminal_error", record.failure.message, "invocation")
        return Response(body, status_code=status, headers=headers, media_type="application/json")
    return Response(record.result or b"null", status_code=200, headers=headers, media_type="application/json")


def _parse_target(runtime: Runtime, raw_path: bytes) -> tuple[Target, bool]:
    """Split ``/{Service}/{handler}[/send]`` or ``/{Object}/{key}/{handler}[/send]``."""
    parts = [unquote(p.decode("latin-1")) for p in raw_path.split(b"/")[1:]]
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or parts[0] == "restate":
        raise NotFound("no route for this path")
    svc = runtime.registry.service(parts[0])
    keyed = svc.type != "service"
    send = len(parts) == (4 if keyed else 3) and parts[-1] == "send"
    if send:
        parts.pop()
    if len(parts) != (3 if keyed else 2):
        shape = "/{Object}/{key}/{handler}" if keyed else "/{Service}/{handler}"
        raise NotFound(f"bad path for {svc.type} '{svc.name}': expected {shape}[/send]")
    handler = parts[-1]
    if handler not in svc.handlers:
        raise NotFound(f"handler '{svc.name}/{handler}' not found")
    return Target(svc.name, handler, parts[1] if keyed else ""), send


def create_ingress(runtime: Runtime) -> Starlette:
    """The ingress Starlette app over a started (or about to start) Runtime."""
    settings = runtime.settings

    async def invoke(request: Request) -> Response:
        target, send = _parse_target(runtime, request.scope.get("raw_path") or request.url.path.encode())
        delay_ms = 0
        if "delay" in request.query_params:
            if not send:
                raise BadRequest("delay is supported only with sends")
            delay_ms = parse_delay(request.query_params["delay"])
        idempotency = request.headers.get("idempotency-key")
        if idempotency is not None and not idempotency.strip():
            raise BadRequest("idempotency-key must not be empty")
        is_workflow_run = runtime.registry.service(target.service).handlers.get(target.handler) == "workflow"
        if is_workflow_run and idempotency is not None:
            raise BadRequest("idempotency-key is not allowed on a workflow's run: the workflow key already is one")
        if is_workflow_run and delay_ms:
            raise BadRequest("delay is not supported for workflows")
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout)
        check_json(request, body)
        forwarded: dict[str, str] = {}
        for name, value in request.headers.items():
            if name not in _NOT_FORWARDED and len(forwarded) < _MAX_FORWARDED:
                forwarded[name] = value
        record, created = await runtime.invoke(target, body, idempotency, forwarded, delay_ms)
        if send:
            status = "Accepted" if created else "PreviouslyAccepted"
            return json_response(
                {"invocationId": record.id, "status": status}, 202, headers={"x-restate-id": record.id}
            )
        return outcome_response(await runtime.wait(record.id))

    async def attach_or_output(invocation_id: str, action: str) -> Response:
        """``attach`` waits for the outcome; ``output`` answers 470 while there is none."""
        if action == "attach":
            return outcome_response(await runtime.wait(invocation_id))
        if action == "output":
            record = runtime.get(invocation_id)
            if not record.is_completed:
                raise NotReady(f"invocation {invocation_id} has not completed yet")
            return outcome_response(record)
        raise NotFound(f"unknown action '{action}': use attach or output")

    async def invocation(request: Request) -> Response:
        return await attach_or_output(request.path_params["invocation_id"], request.path_params["action"])

    async def workflow(request: Request) -> Response:
        invocation_id = runtime.workflow_run(request.path_params["workflow"], request.path_params["key"])
        return await attach_or_output(invocation_id, request.path_params["action"])

    async def awakeable(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("resolve", "reject"):
            raise NotFound(f"unknown action '{action}': use resolve or reject")
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout)
        if action == "resolve":
            check_json(request, body)
            await runtime.complete_awakeable(request.path_params["awakeable_id"], body or b"null", None)
        else:
            message = body.decode("utf-8", "replace") or "rejected"
            await runtime.complete_awakeable(
                request.path_params["awakeable_id"], None, Failure(code=500, message=message)
            )
        return Response(status_code=202)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok" if runtime.started else "starting"})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/restate/invocation/{invocation_id}/{action}", invocation, methods=["GET"]),
        Route("/restate/workflow/{workflow}/{key}/{action}", workflow, methods=["GET"]),
        Route("/restate/awakeables/{awakeable_id}/{action}", awakeable, methods=["POST"]),
        Route("/restate/a/{awakeable_id}/{action}", awakeable, methods=["POST"]),
        Route("/{path:path}", invoke, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers("ingress"))
