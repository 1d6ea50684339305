"""OpenTelemetry traces across the proxy and the handler (issue 15, item 3), in process.

The proxy's spans go to an in-memory exporter of its own `Tracing`; the handler SDK's go to the
process's global tracer provider, read through a second in-memory exporter. One invocation with
a retry and a sleep must give one trace: invocation -> attempts -> steps on the proxy's side, the
SDK's ``ctx.run`` spans under the attempt that ran them, and the user's spans inside those.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handlers_sdk import Context, Service
from proxy.engine.tracing import Tracing
from tests.component.harness import Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

INCOMING_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
INCOMING_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{INCOMING_TRACE:032x}-{INCOMING_SPAN:016x}-01"

_sdk_exporter = InMemorySpanExporter()


def _global_provider() -> TracerProvider:
    """The process's SDK tracer provider, installed once (OTel allows one per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    return provider


_global_provider().add_span_processor(SimpleSpanProcessor(_sdk_exporter))


@pytest.fixture
def sdk_spans() -> Iterator[InMemorySpanExporter]:
    """The handler SDK's spans of this test."""
    _sdk_exporter.clear()
    yield _sdk_exporter
    _sdk_exporter.clear()


def _traced(h: Harness) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    h.apps.runtime.use_tracing(Tracing(exporter, h.apps.runtime.find, batch=False, env={}))
    return exporter


def _flaky_order() -> tuple[Service, dict[str, int]]:
    """A handler whose step fails once (a retry), then sleeps (a suspension)."""
    svc = Service("Traced")
    calls = {"charge": 0}

    @svc.handler()
    async def order(ctx: Context, item: str) -> str:
        def charge() -> str:
            calls["charge"] += 1
            with trace.get_tracer("shop").start_as_current_span("user.charge"):
                if calls["charge"] == 1:
                    raise RuntimeError("card network flaked")
            return f"charged {item}"

        charged: str = await ctx.run("charge", charge)
        await ctx.sleep(timedelta(milliseconds=30), name="cool-off")
        return charged

    return svc, calls


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


async def test_one_trace_covers_retries_suspension_and_the_handlers_spans(
    start: StartHarness, sdk_spans: InMemorySpanExporter
) -> None:
    svc, calls = _flaky_order()
    h = await start([svc])
    proxy_spans = _traced(h)

    response = await h.ingress.post("/Traced/order", json="book", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200, response.text
    assert response.json() == "charged book"
    assert calls["charge"] == 2
    await h.flush()

    proxy = _by_name(proxy_spans.get_finished_spans())
    handler = _by_name(sdk_spans.get_finished_spans())
    assert sorted(proxy) == ["Traced/order", "attempt 1", "attempt 2", "attempt 3", "run charge", "sleep cool-off"]
    assert sorted(handler) == ["ctx.run charge", "user.charge"]
    every = [*proxy_spans.get_finished_spans(), *sdk_spans.get_finished_spans()]
    assert {s.context.trace_id for s in every if s.context is not None} == {INCOMING_TRACE}

    (invocation,) = proxy["Traced/order"]
    assert _parent_id(invocation) == INCOMING_SPAN  # the ingress request's traceparent is honoured
    assert invocation.attributes is not None and invocation.attributes["durable.attempts"] == 3
    attempts = [proxy[f"attempt {n}"][0] for n in (1, 2, 3)]
    assert all(_parent_id(a) == _span_id(invocation) for a in attempts)
    assert [a.attributes["durable.outcome"] for a in attempts if a.attributes] == ["error", "suspended", "completed"]
    assert not attempts[0].status.is_ok
    (step,) = proxy["run charge"]
    assert _parent_id(step) == _span_id(attempts[1])  # journaled by the attempt that ran it to its end
    (sleep,) = proxy["sleep cool-off"]
    assert _parent_id(sleep) == _span_id(invocation)  # a wait outlives its attempt
    assert sleep.end_time is not None and sleep.start_time is not None
    assert sleep.end_time - sleep.start_time >= 25_000_000
    # The invocation spans the whole life: from before the first attempt to after the last.
    assert invocation.start_time is not None and invocation.end_time is not None
    assert all(invocation.start_time <= (a.start_time or 0) for a in attempts)
    assert all((a.end_time or 0) <= invocation.end_time + 1_000_000 for a in attempts)

    # The SDK continues each attempt's span, and the user's spans nest in the step that made them.
    runs = sorted(handler["ctx.run charge"], key=lambda s: s.start_time or 0)
    assert [_parent_id(r) for r in runs] == [_span_id(attempts[0]), _span_id(attempts[1])]
    assert not runs[0].status.is_ok and runs[1].status.is_ok
    users = sorted(handler["user.charge"], key=lambda s: s.start_time or 0)
    assert [_parent_id(u) for u in users] == [_span_id(r) for r in runs]


async def test_without_an_incoming_traceparent_the_invocation_roots_its_own_trace(
    start: StartHarness, sdk_spans: InMemorySpanExporter
) -> None:
    svc, _ = _flaky_order()
    h = await start([svc])
    proxy_spans = _traced(h)
    response = await h.ingress.post("/Traced/order", json="pen")
    assert response.status_code == 200, response.text
    await h.flush()
    spans = proxy_spans.get_finished_spans()
    (invocation,) = [s for s in spans if s.name == "Traced/order"]
    assert invocation.parent is None
    assert len({s.context.trace_id for s in (*spans, *sdk_spans.get_finished_spans()) if s.context}) == 1


async def test_a_call_joins_the_callers_trace_under_its_call_span(
    start: StartHarness, sdk_spans: InMemorySpanExporter
) -> None:
    svc = Service("Chain")

    @svc.handler()
    async def leaf(ctx: Context, n: int) -> int:
        return n + 1

    @svc.handler()
    async def root(ctx: Context, n: int) -> int:
        result: int = await ctx.service_call(leaf, n)
        return result

    h = await start([svc])
    proxy_spans = _traced(h)
    response = await h.ingress.post("/Chain/root", json=1, headers={"traceparent": TRACEPARENT})
    assert response.json() == 2
    await h.flush()
    spans = _by_name(proxy_spans.get_finished_spans())
    (root_span,) = spans["Chain/root"]
    (call,) = spans["call Chain/leaf"]
    (leaf_span,) = spans["Chain/leaf"]
    assert _parent_id(call) == _span_id(root_span)
    assert _parent_id(leaf_span) == _span_id(call)
    assert leaf_span.context is not None and leaf_span.context.trace_id == INCOMING_TRACE


async def test_tracing_off_sends_no_traceparent_and_keeps_no_attempt_state(start: StartHarness) -> None:
    svc, _ = _flaky_order()
    h = await start([svc])
    assert h.apps.runtime.tracing is None  # neither --tracing nor OTEL_* set in the test environment
    seen: list[httpx.Headers] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        raise httpx.ConnectError("down for this attempt")

    h.plan.append(capture)
    response = await h.ingress.post("/Traced/order", json="cup", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200, response.text
    assert seen and "traceparent" not in seen[0]
    # The ingress request's own traceparent still reaches the handler as an ingress header.
    assert h.sent[-1].request.headers.get("traceparent") == TRACEPARENT


async def test_an_awakeable_wait_spans_from_its_journaling_to_the_resumption(
    start: StartHarness, sdk_spans: InMemorySpanExporter
) -> None:
    svc = Service("Waiter")
    issued: list[str] = []

    @svc.handler()
    async def wait(ctx: Context) -> str:
        awakeable_id, future = ctx.awakeable()
        issued.append(awakeable_id)
        value: str = await future
        return value

    h = await start([svc])
    proxy_spans = _traced(h)
    inv = await h.send("/Waiter/wait")
    await h.wait_status(inv, "suspended")
    resolved = await h.ingress.post(f"/restate/awakeables/{issued[-1]}/resolve", json="approved")
    assert resolved.status_code == 202, resolved.text
    await h.wait_status(inv, "completed")
    await h.flush()
    spans = _by_name(proxy_spans.get_finished_spans())
    (invocation,) = spans["Waiter/wait"]
    (awakeable,) = spans["awakeable"]
    (resumed,) = spans["attempt 2"]
    assert _parent_id(awakeable) == _span_id(invocation)
    assert awakeable.start_time is not None and resumed.start_time is not None
    assert awakeable.end_time is not None
    # It ends as the attempt that resumes on it reads the journal.
    assert 0 <= awakeable.end_time - resumed.start_time < 1_000_000_000
    assert awakeable.start_time < resumed.start_time
