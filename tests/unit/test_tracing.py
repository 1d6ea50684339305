"""Tracing's rules without a proxy: when it is on, how trace context follows from a record alone
(so a restarted proxy joins the same trace), and that nothing imports opentelemetry while off."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durable_core.records import InvocationRecord
from handlers_sdk import tracing as sdk_tracing
from handlers_sdk.protocol import Completed, JournalItem, RunEntry, SleepEntry, Suspended
from proxy.engine.tracing import Tracing, TracingError, tracing_from, tracing_wanted

REPO = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _record(inv_id: str = "inv_00000000000000000000000001", **fields: object) -> InvocationRecord:
    base: dict[str, object] = {"id": inv_id, "service": "S", "handler": "h", "created_ms": 1000, "modified_ms": 1000}
    base.update(fields)
    return InvocationRecord(**base)  # type: ignore[arg-type]


def _tracing(exporter: InMemorySpanExporter, records: dict[str, InvocationRecord] | None = None) -> Tracing:
    store = records or {}
    return Tracing(exporter, store.get, batch=False, env={})


@pytest.mark.parametrize(
    ("flag", "env", "wanted"),
    [
        (False, {}, False),
        (True, {}, True),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        (False, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        (False, {"OTEL_TRACES_EXPORTER": "console"}, True),
        (True, {"OTEL_TRACES_EXPORTER": "none"}, False),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
        (False, {"OTEL_SERVICE_NAME": "x"}, False),  # naming a service alone turns nothing on
    ],
)
def test_tracing_is_on_only_when_asked(flag: bool, env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(flag, env) is wanted


def test_tracing_from_builds_nothing_when_off_and_refuses_an_unknown_exporter() -> None:
    assert tracing_from(False, lambda _: None, {}) is None
    with pytest.raises(TracingError, match="zipkin"):
        tracing_from(False, lambda _: None, {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingError, match="grpc"):
        tracing_from(True, lambda _: None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    console = tracing_from(False, lambda _: None, {"OTEL_TRACES_EXPORTER": "console"})
    assert console is not None
    console.shutdown()


def test_trace_context_follows_from_the_record_alone() -> None:
    """Two proxies (before and after a restart) give an attempt the same trace and parent span."""
    record = _record(attempt=3, headers={"traceparent": TRACEPARENT})
    before, after = _tracing(InMemorySpanExporter()), _tracing(InMemorySpanExporter())
    header = before.traceparent(record)
    assert header == after.traceparent(record)
    assert header is not None and header.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert header != before.traceparent(_record(attempt=4, headers={"traceparent": TRACEPARENT}))
    untraced = before.traceparent(_record(attempt=1))
    assert untraced == after.traceparent(_record(attempt=1)) and untraced is not None
    assert untraced.split("-")[1] != "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is invalid
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent span
    ],
)
def test_an_invalid_incoming_traceparent_starts_a_new_trace(bad: str) -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    record = _record(headers={"traceparent": bad}, status="completed", completed_ms=2000, attempt=1)
    tracing.completed(record)
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.context is not None
    assert span.context.trace_id != 0x0AF7651916CD43DD8448EB211C80319C


def test_attempt_spans_hold_the_steps_it_journaled_with_the_journals_times() -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    record = _record(attempt=2, headers={"traceparent": TRACEPARENT})
    attempt = tracing.attempt_started(record, now_ms=5000)
    assert attempt is not None
    attempt.journaled(0, RunEntry(name="charge", started_ms=5010, duration_ms=40), 5060)
    outcome = Suspended(entries=[JournalItem(index=1, entry=SleepEntry(name="nap", wake_at_ms=9000))])
    tracing.attempt_settled(attempt, record, outcome, record, now_ms=5070)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["attempt 2", "run charge", "sleep nap"]
    run, sleep, span = spans["run charge"], spans["sleep nap"], spans["attempt 2"]
    assert (run.start_time, run.end_time) == (5010 * 10**6, 5050 * 10**6)
    assert (sleep.start_time, sleep.end_time) == (5070 * 10**6, 9000 * 10**6)
    assert (span.start_time, span.end_time) == (5000 * 10**6, 5070 * 10**6)
    assert run.parent is not None and span.context is not None and run.parent.span_id == span.context.span_id
    assert sleep.parent is not None and span.parent is not None and sleep.parent.span_id == span.parent.span_id
    assert span.attributes is not None and span.attributes["durable.outcome"] == "suspended"
    # Never the record's headers (they may carry credentials) in an attribute.
    assert all(TRACEPARENT not in str(s.attributes) for s in spans.values())


def test_a_completed_outcome_emits_no_wait_and_an_unsampled_caller_emits_nothing() -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    unsampled = TRACEPARENT[:-2] + "00"
    record = _record(attempt=1, headers={"traceparent": unsampled}, status="completed", completed_ms=1500)
    attempt = tracing.attempt_started(record, now_ms=1100)
    assert attempt is not None
    tracing.attempt_settled(attempt, record, Completed(), record, now_ms=1400)
    tracing.completed(record)
    assert exporter.get_finished_spans() == ()


# -- the SDK's side ---------------------------------------------------------------------------


def test_sdk_extracts_the_attempt_context_and_nests_steps_in_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert sdk_tracing.enabled
    assert sdk_tracing.extract([(b"content-type", b"application/json")]) is None
    assert sdk_tracing.extract([(b"traceparent", b"00-nonsense")]) is None
    ctx = sdk_tracing.extract([(b"traceparent", TRACEPARENT.encode())])
    assert ctx is not None

    async def body() -> RunEntry:
        with provider.get_tracer("user").start_as_current_span("inside"):
            pass
        return RunEntry(name="s")

    async def attempt() -> RunEntry:
        # The SDK's spans come from the global provider; stand in for it with this one.
        original = trace.get_tracer
        trace.get_tracer = provider.get_tracer  # type: ignore[assignment]
        try:
            return await sdk_tracing.traced_step("s", body())
        finally:
            trace.get_tracer = original

    token = context.attach(ctx)
    try:
        asyncio.run(attempt())
    finally:
        context.detach(token)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    step, inside = spans["ctx.run s"], spans["inside"]
    assert step.parent is not None and step.parent.span_id == 0xB7AD6B7169203331
    assert inside.parent is not None and step.context is not None and inside.parent.span_id == step.context.span_id


def test_sdk_makes_no_step_span_outside_a_trace() -> None:
    async def body() -> RunEntry:
        assert not trace.get_current_span().get_span_context().is_valid
        return RunEntry(name="s")

    assert asyncio.run(sdk_tracing.traced_step("s", body())).name == "s"


_WITHOUT_OTEL = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ImportError("blocked: " + name)
            return None

    if sys.argv[1] == "blocked":
        sys.meta_path.insert(0, Block())
    import handlers_sdk, handlers_sdk.server, handlers_sdk.tracing
    from proxy.engine.runtime import Runtime
    from proxy.engine.tracing import tracing_from
    from proxy.config import Settings
    runtime = Runtime(Settings(data_dir=sys.argv[2]))
    assert runtime.tracing is None and runtime.invoker.tracing is None
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry."))
    if sys.argv[1] == "blocked":
        assert not handlers_sdk.tracing.enabled
        assert tracing_from(False, lambda _: None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
        try:
            tracing_from(True, lambda _: None, {})
        except RuntimeError as exc:
            assert "durable-proxy[tracing]" in str(exc)
        else:
            raise AssertionError("--tracing without opentelemetry must fail")
    print(loaded)
    """
)


@pytest.mark.parametrize("mode", ["installed", "blocked"])
def test_tracing_off_imports_no_opentelemetry(mode: str, tmp_path: Path) -> None:
    """Off (installed but not configured, or not installed): the proxy and the SDK load none of it."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, mode, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_server_refuses_to_start_with_an_exporter_it_cannot_use(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--data-dir", str(tmp_path / "data"), "--log-format", "text"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OTEL_TRACES_EXPORTER": "zipkin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "OTEL_TRACES_EXPORTER='zipkin'" in result.stderr
