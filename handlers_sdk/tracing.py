"""Continue the proxy's trace in the handler service, when the OpenTelemetry API is installed.

The proxy sends each attempt with a W3C ``traceparent`` header: the context of its attempt span
(see the proxy's ``proxy/engine/tracing.py``). With ``opentelemetry-api`` importable, the SDK runs
the attempt under that context and wraps each execution of a ``ctx.run`` body in a span
``ctx.run {name}``, so the spans a step body makes nest in it. The spans go wherever the
service's tracer provider sends them: configure one (`configure` below does it from the
``OTEL_*`` variables, or use ``opentelemetry-instrument``); with the API alone they are no-ops.

Without opentelemetry installed, or with ``OTEL_SDK_DISABLED=true``, `enabled` is False and the
SDK calls nothing here; opentelemetry is imported only by the first traced attempt.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from handlers_sdk.protocol import RunEntry

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ["configure", "continued", "enabled", "extract", "traced_step"]

T = TypeVar("T")

#: The request headers of W3C trace context (lower case, as in ASGI scopes).
_PROPAGATED = frozenset({b"traceparent", b"tracestate"})


def _installed() -> bool:
    """True if the OpenTelemetry API can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # a parent that is not a package, or a finder that refuses it
        return False


#: True when the OpenTelemetry API is installed and not disabled: checked once per attempt and step.
enabled: bool = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true" and _installed()


def extract(headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The trace context of a request's ``traceparent`` (and ``tracestate``) header, or None without one."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
    if "traceparent" not in carrier:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


async def continued(headers: Iterable[tuple[bytes, bytes]], call: Coroutine[Any, Any, T]) -> T:
    """Await `call` (the serving of an invoke request) under the trace context its headers carry.

    The attempt's handler task is created inside it and so inherits the context (a task copies
    the context it is created in): the handler's spans and its steps' are the attempt's children.
    """
    ctx = extract(headers)
    if ctx is None:
        return await call
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        return await call
    finally:
        context.detach(token)


async def traced_step(name: str, body: Coroutine[Any, Any, RunEntry]) -> RunEntry:
    """Await a step's body in a span ``ctx.run {name}`` when the attempt is traced (else just await it).

    The span is current while the body runs (a sync body's worker thread gets a copy of the
    context), so user spans nest in it; a failure journaled for the step marks it as an error.
    """
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().is_valid:
        return await body  # not in a trace: no root span per step
    tracer = trace.get_tracer("handlers_sdk")
    with tracer.start_as_current_span(f"ctx.run {name}", attributes={"durable.step": name}) as span:
        entry = await body
        if entry.failure is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, entry.failure.message))
        return entry


def configure(service_name: str = "", env: Mapping[str, str] | None = None) -> bool:
    """Install a global tracer provider that exports over OTLP/HTTP as the ``OTEL_*`` variables say.

    For a handler service that has no OpenTelemetry set-up of its own (needs ``opentelemetry-sdk``
    and ``opentelemetry-exporter-otlp-proto-http``: the ``tracing`` extra). Does nothing when
    tracing is not `enabled` or ``OTEL_TRACES_EXPORTER`` is ``none``.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` is set.
        env: the environment (``os.environ`` by default).

    Returns:
        True if a provider was installed.
    """
    env = os.environ if env is None else env
    if not enabled or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME") or service_name or "handlers-sdk"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
