"""The ingress API, with Restate's paths, status codes and answers (its ``crates/ingress-http``).

Requests are routed on the raw (still percent-encoded) path, the way Restate's ingress does: the
path is split on ``/`` first and only then is an object's or workflow's key decoded, so a key
holding ``/`` (sent as ``%2F``), ``?``, a space or any unicode is one segment. The deliberate
differences from Restate are tabled in docs/restate-compatibility.md.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from durable_core.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    UnsupportedMediaType,
    error_body,
)
from durable_core.records import InvocationRecord
from handlers_sdk.ids import INVOCATION_ID_PATTERN
from handlers_sdk.protocol import Failure
from proxy.api.admission import Admission
from proxy.api.http import Cors, check_json, exception_handlers, json_response, read_body
from proxy.config import parse_duration
from proxy.engine.runtime import Runtime, Target

__all__ = ["create_ingress", "outcome_response", "parse_delay"]

#: Request headers that are not forwarded to the handler (Restate drops the same ones).
_NOT_FORWARDED = frozenset(
    {
        "connection", "host", "idempotency-key", "idempotency-expires", "content-length", "transfer-encoding",
        "keep-alive", "expect",
    }
)  # fmt: skip
_MAX_FORWARDED = 64

_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)

# Restate's messages for the errors of its ingress (crates/ingress-http/src/handler/error.rs).
_BAD_SERVICE_PATH = "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
_BAD_AWAKEABLES_PATH = "bad path, expected either /restate/awakeables/:id/resolve or /restate/awakeables/:id/reject"
_BAD_INVOCATION_PATH = (
    "bad path, expected either /restate/invocation/:invocation_id/output or /restate/invocation/:invocation_id/attach"
    " or /restate/invocation/:invocation_target/:idempotency_key/output or"
    " /restate/invocation/:invocation_target/:idempotency_key/attach"
)
_BAD_WORKFLOW_PATH = (
    "bad path, expected either /restate/workflow/:workflow_name/:workflow_key/output or "
    "/restate/workflow/:workflow_name/:workflow_key/attach"
)
_BAD_RESTATE_API_PATH = (
    "bad path, expected /restate/call/:service/:handler, /restate/send/:service/:handler, "
    "/restate/scope/:scope/call/:service/:handler, /restate/attach/:invocation_id, /restate/output/:invocation_id, "
    "or /restate/lookup"
)


def parse_delay(text: str, max_ms: int | None = None) -> int:
    """Milliseconds from Restate's ``delay`` forms: ``10s``, ``500ms``, ``2m`` or ISO ``PT10S``.

    Raises:
        BadRequest: not a delay, or one longer than `max_ms`.
    """
    ms: float
    match = _ISO_DURATION.match(text.strip())
    if match is not None and text.strip().upper() not in ("P", "PT"):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        ms = ((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000
    else:
        try:
            ms = parse_duration(text) * 1000
        except ValueError:
            raise BadRequest(
                f"bad delay query parameter, must be a ISO8601 duration: {text!r} (or e.g. 10s, 500ms, 2m)"
            ) from None
    # Digits enough overflow a float to inf (``1`` and 309 zeros): too long, like any past the cap.
    if not math.isfinite(ms) or (max_ms is not None and ms > max_ms):
        limit = f" of {max_ms / 86_400_000:g} days (--max-delay)" if max_ms is not None else ""
        raise BadRequest(f"bad delay query parameter: {text[:40]!r} is longer than the maximum delay{limit}")
    return int(ms)


def _timestamp(ms: int, zulu: bool) -> str:
    """RFC 3339 in UTC with milliseconds only when there are any: ``Z`` as Restate's send answer
    writes it (humantime), ``+00:00`` as its ``idempotency-expires`` header does (chrono)."""
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + ("Z" if zulu else "+00:00")


def _failure_response(invocation_id: str, failure: Failure, extra: dict[str, str] | None = None) -> Response:
    """An invocation's terminal failure: its code as the status (500 outside 400-599)."""
    code = failure.code
    status = code if 400 <= code <= 599 else 500
    headers = {"x-restate-id": invocation_id, "x-restate-error-source": "invocation", **(extra or {})}
    body = error_body(code, "terminal_error", failure.message, "invocation")
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def outcome_response(record: InvocationRecord) -> Response:
    """The answer for a completed invocation: its JSON result (200) or its terminal failure.

    An invocation that can be attached to by its idempotency key (or its workflow key) carries
    ``idempotency-expires``: when the proxy forgets its result (Restate's header).
    """
    headers = {"x-restate-id": record.id}
    if (
        record.is_completed
        and record.expires_ms > 0
        and (record.idempotency_key is not None or record.kind == "workflow")
    ):
        headers["idempotency-expires"] = _timestamp(record.expires_ms, zulu=False)
    if record.failure is not None:
        return _failure_response(record.id, record.failure, headers)
    return Response(record.result or b"null", status_code=200, headers=headers, media_type="application/json")


def _invocation_not_found(invocation_id: str) -> Response:
    """404 for a well-formed invocation id the proxy does not know (with that id in ``x-restate-id``)."""
    return Response(
        NotFound("invocation not found").body("ingress"),
        status_code=404,
        media_type="application/json",
        headers={"x-restate-id": invocation_id, "x-restate-error-source": "ingress"},
    )


def _invocation_id(text: str) -> str:
    if INVOCATION_ID_PATTERN.fullmatch(text) is None:
        raise BadRequest(f"bad invocation id '{text}': expected inv_1 and 33 base62 characters")
    return text


def _decode_key(segment: str) -> str:
    """A key segment, percent-decoded as UTF-8 (``+`` stays a plus, as in Restate)."""
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"bad path, cannot decode key: {exc}") from None


def _method(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise MethodNotAllowed("method not allowed")


class _Call:
    """A parsed invocation path: the target, call or send, and the scope of a scoped path."""

    __slots__ = ("scope", "send", "target")

    def __init__(self, target: Target, send: bool, scope: str | None = None) -> None:
        self.target = target
        self.send = send
        self.scope = scope


def create_ingress(runtime: Runtime) -> Starlette:
    """The ingress Starlette app over a started (or about to start) Runtime."""
    settings = runtime.settings

    # -- paths ------------------------------------------------------------------------------------

    def target_of(name: str, parts: list[str], bad_path: str, legacy: bool) -> _Call:
        """`parts` after the service name: ``[key/]handler`` then, on the legacy paths, ``[send]``."""
        svc = runtime.registry.service(name)
        rest = list(parts)
        key = ""
        if svc.type != "service":
            if not rest:
                raise BadRequest(bad_path)
            key = _decode_key(rest.pop(0))
        if not rest:
            raise BadRequest(bad_path)
        handler = rest.pop(0)
        send = False
        if legacy and rest:
            if rest.pop(0) != "send":
                raise BadRequest(bad_path)
            send = True
        if rest:
            raise BadRequest(bad_path)
        if handler not in svc.handlers:
            raise NotFound(
                f"the service '{svc.name}' exists, but the handler '{handler}' was not found, check that the "
                "handler exists in the latest registered service version."
            )
        if handler in svc.private_handlers:
            # Restate's status and words; other handlers still call it (their calls skip the ingress).
            raise BadRequest(
                f"the invoked service is not public: {svc.name}/{handler} is ingress_private, callable only "
                "from other handlers"
            )
        return _Call(Target(svc.name, handler, key), send)

    async def dispatch(request: Request) -> Response:
        raw = (request.scope.get("raw_path") or request.url.path.encode()).split(b"?")[0]
        path = raw.decode("latin-1")
        if len(path) > 1:
            path = path.rstrip("/") or "/"  # trailing slashes are trimmed (Restate's NormalizePath)
        if not 2 <= path.count("/") <= 7:
            raise BadRequest(f"bad path: {path}")
        segments = path.split("/")[1:]
        first = segments[0]
        if first == "openapi":
            raise NotFound("not found")
        if first != "restate":
            return await invoke(request, target_of(first, segments[1:], _BAD_SERVICE_PATH, legacy=True))
        verb, rest = segments[1], segments[2:]
        if verb == "health":
            _method(request, "GET")
            return json_response({"services": sorted(runtime.registry.services)})
        if verb in ("awakeables", "a"):
            if len(rest) < 2:
                raise BadRequest(_BAD_AWAKEABLES_PATH)
            return await awakeable(request, rest[0], rest[1])
        if verb == "invocation":
            return await invocation_path(request, rest)
        if verb == "workflow":
            if len(rest) < 3:
                raise BadRequest(_BAD_WORKFLOW_PATH)
            name, key, action = rest[0], _decode_key(rest[1]), rest[2]
            if action not in ("attach", "output"):
                raise NotFound("not found")
            _method(request, "GET")
            try:
                run = runtime.workflow_run(name, key)
            except BadRequest:  # not a workflow: it has no run to find (Restate's 404)
                raise NotFound("invocation not found") from None
            return await attach_or_output(run, action)
        if verb in ("call", "send"):
            if not rest:
                raise BadRequest(_BAD_RESTATE_API_PATH)
            call = target_of(rest[0], rest[1:], _BAD_RESTATE_API_PATH, legacy=False)
            call.send = verb == "send"
            return await invoke(request, call)
        if verb == "scope":
            if len(rest) < 3 or rest[1] not in ("call", "send"):
                raise BadRequest(_BAD_RESTATE_API_PATH)
            target_of(rest[2], rest[3:], _BAD_RESTATE_API_PATH, legacy=False)
            raise BadRequest("scoped invocations require vqueues to be enabled")
        if verb in ("attach", "output"):
            if len(rest) > 1:
                raise BadRequest(_BAD_RESTATE_API_PATH)
            if rest:
                invocation_id = _invocation_id(rest[0])
                _method(request, "GET")
                return await attach_or_output(invocation_id, verb)
            _method(request, "POST")
            return await attach_or_output(await target_in_body(request), verb)
        if verb == "lookup":
            if rest:
                raise BadRequest(_BAD_RESTATE_API_PATH)
            _method(request, "POST")
            return json_response({"invocationId": await target_in_body(request, lookup=True)})
        raise NotFound("not found")

    async def invocation_path(request: Request, rest: list[str]) -> Response:
        """``/restate/invocation/{id}/{action}`` or ``.../{service}[/{key}]/{handler}/{idempotency-key}/{action}``."""
        if len(rest) < 2:
            raise BadRequest(_BAD_INVOCATION_PATH)
        if len(rest) == 2:
            invocation_id, action = rest
            if action not in ("attach", "output"):
                raise NotFound("not found")
            _invocation_id(invocation_id)
        else:
            svc = runtime.registry.service(rest[0])
            keyed = svc.type != "service"
            if len(rest) < (5 if keyed else 4):
                raise BadRequest(_BAD_INVOCATION_PATH)
            key = _decode_key(rest[1]) if keyed else ""
            handler, idempotency, action = rest[2:5] if keyed else rest[1:4]
            if action not in ("attach", "output"):
                raise NotFound("not found")
            _method(request, "GET")
            found = runtime.idempotent_invocation(svc.name, handler, key, _decode_key(idempotency))
            return await attach_or_output(found, action)
        _method(request, "GET")
        return await attach_or_output(invocation_id, action)

    async def target_in_body(request: Request, lookup: bool = False) -> str:
        """The invocation a ``POST /restate/attach|output|lookup`` body names (Restate's
        ``InvocationTargetRequest``: ``{"target": "invocation" | "workflow" | "idempotentInvocation", ...}``)."""
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout, settings.max_drain_bytes)
        try:
            data: Any = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            data = None
        target = data.get("target") if isinstance(data, dict) else None

        def text(field: str, optional: bool = False) -> str:
            value = data.get(field)
            if value is None and optional:
                return ""
            if not isinstance(value, str):
                raise BadRequest(f"invalid request body: field '{field}' must be a string")
            return value

        if target == "invocation":
            return _invocation_id(text("invocationId"))
        if target == "workflow":
            return runtime.workflow_run(text("workflowName"), text("workflowKey"))
        if target == "idempotentInvocation":
            return runtime.idempotent_invocation(
                text("service"), text("handler"), text("key", optional=True), text("idempotencyKey")
            )
        raise BadRequest(
            "invalid request body: expected a JSON object with target 'invocation' (invocationId), 'workflow' "
            "(workflowName, workflowKey) or 'idempotentInvocation' (service, key, handler, idempotencyKey)"
        )

    # -- invocations ------------------------------------------------------------------------------

    async def invoke(request: Request, call: _Call) -> Response:
        _method(request, "GET", "POST")
        target, send = call.target, call.send
        idempotency = request.headers.get("idempotency-key")
        if idempotency is not None and not idempotency.strip():
            idempotency = None  # an empty idempotency-key header is ignored, as by Restate
        is_workflow_run = runtime.registry.service(target.service).handlers.get(target.handler) == "workflow"
        if is_workflow_run and idempotency is not None:
            raise BadRequest(
                "cannot use the idempotency key with workflow handlers. The handler invocation will already be "
                "idempotent by the workflow key itself."
            )
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout, settings.max_drain_bytes)
        try:
            check_json(request, body)
        except UnsupportedMediaType as exc:
            raise BadRequest(f"input validation error: {exc.message}") from None
        delay_ms: int | None = None
        for name, value in parse_qsl(request.url.query, keep_blank_values=True):
            if name.lower() == "delay":
                delay_ms = parse_delay(value, int(settings.max_delay * 1000))
                break
        if delay_ms is not None and not send:
            raise BadRequest("cannot use the delay query parameter with calls. The delay is supported only with sends")
        # The key per-key concurrency and rate limits apply to: Restate 1.7's header or query
        # parameter (Restate also wants a scope; here limits are per service, so none is needed).
        limit_key = (
            request.headers.get("x-restate-limit-key")
            or request.headers.get("limit-key")
            or next(
                (
                    value
                    for name, value in parse_qsl(request.url.query, keep_blank_values=True)
                    if name.lower() == "limit-key"
                ),
                "",
            )
        )
        # Restate tells the handler the path (and query) the request came in on.
        raw_query = request.scope.get("query_string", b"")
        ingress_path = request.scope.get("raw_path", b"").split(b"?")[0] + (b"?" + raw_query if raw_query else b"")
        forwarded: dict[str, str] = {"x-restate-ingress-path": ingress_path.decode("latin-1")}
        if limit_key:
            forwarded["x-restate-limit-key"] = limit_key  # first, so the header cap never drops it
        for name, value in request.headers.items():
            if name not in _NOT_FORWARDED and len(forwarded) < _MAX_FORWARDED:
                forwarded[name] = value
        if send:
            record, created = await runtime.invoke(target, body, idempotency, forwarded, delay_ms or 0)
            answer: dict[str, str] = {"invocationId": record.id}
            if record.scheduled_at_ms > 0:
                answer["executionTime"] = _timestamp(record.scheduled_at_ms, zulu=True)
            answer["status"] = "Accepted" if created else "PreviouslyAccepted"
            return json_response(answer, 202, headers={"x-restate-id": record.id})
        record, failure = await runtime.call(target, body, idempotency, forwarded)
        if failure is not None:
            return _failure_response(record.id, failure)
        return outcome_response(record)

    async def attach_or_output(invocation_id: str, action: str) -> Response:
        """``attach`` waits for the outcome; ``output`` answers 470 while there is none."""
        try:
            if action == "attach":
                return outcome_response(await runtime.wait(invocation_id))
            record = runtime.get(invocation_id)
        except NotFound:
            return _invocation_not_found(invocation_id)
        if not record.is_completed:
            raise NotReady("the invocation exists but has not completed yet")
        return outcome_response(record)

    async def awakeable(request: Request, awakeable_id: str, action: str) -> Response:
        if action not in ("resolve", "reject"):
            raise NotFound("not found")
        _method(request, "POST")
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout, settings.max_drain_bytes)
        if action == "resolve":
            # The value is journaled as JSON: the body must be JSON, whatever its content type.
            check_json(request, body, content_type=False)
            await runtime.accept_awakeable(awakeable_id, body or b"null", None)
        else:
            message = body.decode("utf-8", "replace") or "rejected"
            await runtime.accept_awakeable(awakeable_id, None, Failure(code=500, message=message))
        return Response(status_code=202)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok" if runtime.started else "starting"})

    routes = [
        Route("/health", health, methods=["GET"]),
        # Every method reaches `dispatch`, which answers 405 as Restate does (after routing).
        Route("/{path:path}", dispatch, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    app = Starlette(routes=routes, exception_handlers=exception_handlers("ingress"))
    # Inside CORS, so that a browser can read a 431 or 503 too.
    app.add_middleware(
        Admission,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        source="ingress",
        max_in_flight=settings.max_concurrent_requests,
        write_backlog=lambda: runtime.writer.queued,
        max_write_queue=settings.max_write_queue,
        max_body_bytes=settings.max_inflight_body_bytes,
        body_limit=settings.max_body_bytes,
    )
    app.add_middleware(Cors)
    return app
