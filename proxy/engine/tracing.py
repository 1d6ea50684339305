"""OpenTelemetry traces of invocations, built from what the proxy journals.

Off unless ``--tracing`` (``PROXY_TRACING``) is given or one of ``OTEL_TRACES_EXPORTER`` (not
``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and
``OTEL_SDK_DISABLED`` is not true). opentelemetry is imported only then; while off the runtime
holds no `Tracing` and the engine calls nothing here. Spans go out over OTLP/HTTP (or to the
console with ``OTEL_TRACES_EXPORTER=console``), configured by the standard ``OTEL_*`` variables.

One invocation's tree::

    Service/handler            the invocation: created -> completed; its parent is the ingress
    |                          request's traceparent, or the caller's call span for a call
    +-- attempt 1              launch -> outcome recorded; the traceparent the handler receives
    |   +-- run charge         a ctx.run step, timed by the journal (started_ms, duration_ms)
    |   +-- send Other/h       a one-way call (instant)
    +-- sleep nap              journaled -> due (waits nest in the invocation: they outlive attempts)
    +-- call Other/h           the child's created -> completed
    |   +-- Other/h            the child invocation, its attempts and steps (same trace)
    +-- awakeable / promise p  journaled -> seen completed by the attempt that resumes on it
    +-- attempt 2 ...

Every span id is derived from the invocation id (with the attempt number or the journal index),
and the trace id from the record: the incoming ``traceparent`` the ingress keeps in its headers,
the caller's trace for a call, else a hash of the invocation id. So attempts after a restart join
the same trace with nothing stored but the record. A span is emitted once its end is known (an
attempt's when its outcome is recorded, the invocation's when it completes) through a batch
processor: the hot path never waits for an exporter, and a crash of the proxy loses only the
spans of the attempts in flight (and what was still queued for export).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, ParamSpec, TypeVar

from durable_core.lifecycle import AttemptFailure
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import (
    AwakeableEntry,
    CallEntry,
    Completed,
    Entry,
    Errored,
    Failed,
    Outcome,
    PromiseGetEntry,
    RunEntry,
    SendEntry,
    SleepEntry,
    Suspended,
    decode_item,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import SpanKind

__all__ = ["AttemptTrace", "Tracing", "TracingError", "tracing_from", "tracing_wanted"]

log = logging.getLogger("proxy.engine.tracing")

#: W3C trace-context, version 00 (later versions may append fields: only the first four are read).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
#: Open waits (awakeables, promises) kept in memory for their spans; past this many, new ones get none.
_MAX_OPEN_WAITS = 100_000
_NS = 1_000_000  # nanoseconds per millisecond: journal times are in ms, OTel's in ns

P = ParamSpec("P")
R = TypeVar("R")


def _guarded(method: Callable[P, R | None]) -> Callable[P, R | None]:
    """Log, never raise: a bug or a failing read in tracing must not fail an attempt."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(*args, **kwargs)
        except Exception:
            log.exception("tracing: %s failed; spans of this invocation may be missing", method.__name__)
            return None

    return guarded


class TracingError(RuntimeError):
    """Tracing is asked for but cannot be set up (opentelemetry missing, an unknown exporter)."""


def tracing_wanted(flag: bool, env: Mapping[str, str]) -> bool:
    """True when the flag or the standard OTel variables ask for traces (and the SDK is not disabled)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return flag or bool(
        exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracing_from(
    flag: bool, lookup: Callable[[str], InvocationRecord | None], env: Mapping[str, str] | None = None
) -> Tracing | None:
    """The proxy's tracing as `flag` (``--tracing``) and the ``OTEL_*`` variables ask, or None when off.

    Args:
        flag: ``--tracing``: without opentelemetry installed this is an error, while a variable
            set for other programs only logs a warning.
        lookup: reads a stored record (a call's child joins its caller's trace).
        env: the environment (``os.environ`` by default).

    Raises:
        TracingError: `flag` is set but opentelemetry-sdk is not installed, or the exporter is unknown.
    """
    env = os.environ if env is None else env
    if not tracing_wanted(flag, env):
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: F401 - only: is the SDK there?
    except ImportError:
        message = "tracing needs opentelemetry: pip install 'durable-proxy[tracing]'"
        if flag:
            raise TracingError(message) from None
        log.warning("OTEL_* variables are set but %s; traces are off", message)
        return None
    return Tracing(_exporter(env), lookup, env=env)


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    """The exporter ``OTEL_TRACES_EXPORTER`` names (``otlp`` by default, over HTTP/protobuf)."""
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise TracingError(f"OTEL_TRACES_EXPORTER={name!r}: the proxy exports with 'otlp' or 'console'")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol and protocol != "http/protobuf":
        raise TracingError(f"OTLP protocol {protocol!r}: the proxy exports with http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _span_id(*parts: str) -> int:
    """A span id derived from `parts` (never 0, which W3C reserves for "none")."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class _Trace(NamedTuple):
    """Where an invocation's spans go: its trace, its own span and its span's parent."""

    trace_id: int
    span_id: int
    #: The span the invocation span hangs under (0: it is the root of the trace).
    parent_id: int
    flags: int


class AttemptTrace:
    """One attempt's place in its trace, and what it journaled, kept until its outcome is recorded."""

    __slots__ = ("attempt", "span_id", "started_ms", "steps", "trace", "traceparent")

    def __init__(self, record: InvocationRecord, trace: _Trace, started_ms: int) -> None:
        self.attempt = record.attempt
        self.trace = trace
        self.span_id = _span_id(record.id, "attempt", str(record.attempt))
        self.started_ms = started_ms
        #: The ``traceparent`` header of the attempt's request: the handler continues its span.
        self.traceparent = f"00-{trace.trace_id:032x}-{self.span_id:016x}-{trace.flags:02x}"
        #: (index, entry as journaled, when it was journaled in ms).
        self.steps: list[tuple[int, Entry, int]] = []

    def journaled(self, index: int, entry: Entry, now_ms: int) -> None:
        """An entry of this attempt was committed (a step ack)."""
        self.steps.append((index, entry, now_ms))


class Tracing:
    """Emits the spans of invocations, attempts and journaled steps (see the module docstring).

    Args:
        exporter: where spans go; batched unless `batch` is False (tests read them at once).
        lookup: reads a stored record, or None (a call's child joins its caller's trace).
        env: read for ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        lookup: Callable[[str], InvocationRecord | None],
        *,
        batch: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import Decision
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        env = os.environ if env is None else env
        self._lookup = lookup
        self._resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "durable-proxy"})
        # For its sampler only (OTEL_TRACES_SAMPLER...): spans are built finished, as `ReadableSpan`s
        # with their ids and journal times, and handed to the processor (a third of start_span's cost).
        self._sampler = TracerProvider(resource=self._resource).sampler
        self._processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._scope = InstrumentationScope("durable-proxy")
        self._readable, self._span_context, self._flags = ReadableSpan, SpanContext, TraceFlags
        self._ok, self._error = Status(), StatusCode.ERROR
        self._status, self._kind, self._sampled = Status, SpanKind, Decision.RECORD_AND_SAMPLE
        #: invocation id -> {index: (span name, journaled ms)} of its awakeables and promises not seen completed.
        self._waits: dict[str, dict[int, tuple[str, int]]] = {}

    # -- trace context ----------------------------------------------------------------------------

    def _trace_of(self, record: InvocationRecord, depth: int = 0) -> _Trace:
        """The trace and span of an invocation, from its record alone (see the module docstring)."""
        span_id = _span_id(record.id, "invocation")
        if record.parent_id and depth < 64:
            parent = self._lookup(record.parent_id)
            if parent is not None:
                caller = self._trace_of(parent, depth + 1)
                return _Trace(
                    caller.trace_id, span_id, _span_id(parent.id, "step", str(record.parent_index)), caller.flags
                )
        match = _TRACEPARENT.match(record.headers.get("traceparent", ""))
        if match is not None and match[1] != "ff" and int(match[2], 16) and int(match[3], 16):
            return _Trace(int(match[2], 16), span_id, int(match[3], 16), int(match[4], 16) & 0xFF)
        trace_id = int.from_bytes(hashlib.sha256(b"trace\x00" + record.id.encode()).digest()[:16], "big")
        # A new trace: sampled as the provider's sampler (OTEL_TRACES_SAMPLER) decides for its id.
        decision = self._sampler.should_sample(None, trace_id, f"{record.service}/{record.handler}")
        return _Trace(trace_id, span_id, 0, 1 if decision.decision is self._sampled else 0)

    def traceparent(self, record: InvocationRecord) -> str:
        """The ``traceparent`` header of the attempt `record` describes (see `AttemptTrace`)."""
        return AttemptTrace(record, self._trace_of(record), 0).traceparent

    # -- spans ------------------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        trace: _Trace,
        span_id: int,
        parent_id: int,
        start_ms: int,
        end_ms: int,
        kind: SpanKind | None = None,
        attributes: dict[str, str | int] | None = None,
        error: str | None = None,
    ) -> None:
        if not trace.flags & 1:
            return  # not sampled (the caller's traceparent says so, or the sampler did)
        flags = self._flags(trace.flags)
        parent = self._span_context(trace.trace_id, parent_id, True, flags) if parent_id else None
        span = self._readable(
            name,
            context=self._span_context(trace.trace_id, span_id, False, flags),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind or self._kind.INTERNAL,
            status=self._ok if error is None else self._status(self._error, error),
            start_time=start_ms * _NS,
            end_time=max(start_ms, end_ms) * _NS,
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)

    def attempt_started(self, record: InvocationRecord, now_ms: int) -> AttemptTrace | None:
        """An attempt is being sent: its trace context, and what it journals from now on.

        None if its trace cannot be worked out (logged): the attempt goes on untraced.
        """
        try:
            return AttemptTrace(record, self._trace_of(record), now_ms)
        except Exception:
            log.exception("tracing: no trace for attempt %d of %s", record.attempt, record.id)
            return None

    @_guarded
    def resumed(self, record: InvocationRecord, rows: list[bytes], now_ms: int) -> None:
        """A new attempt reads the journal: the awakeables and promises it finds completed end their waits."""
        waits = self._waits.get(record.id)
        if not waits:
            return
        trace = self._trace_of(record)
        for row in rows:
            item = decode_item(row)
            wait = waits.get(item.index)
            entry = item.entry
            if wait is not None and isinstance(entry, AwakeableEntry | PromiseGetEntry) and entry.completed:
                del waits[item.index]
                error = entry.failure.message if entry.failure is not None else None
                span = _span_id(record.id, "step", str(item.index))
                self._emit(
                    wait[0], trace, span, trace.span_id, wait[1], now_ms, attributes=_step(item.index), error=error
                )
        if not waits:
            del self._waits[record.id]

    @_guarded
    def attempt_settled(
        self,
        attempt: AttemptTrace,
        record: InvocationRecord,
        result: Outcome | AttemptFailure,
        updated: InvocationRecord,
        now_ms: int,
    ) -> None:
        """The attempt's outcome is recorded: emit its span and those of the steps it journaled."""
        trace, span_id, steps = attempt.trace, attempt.span_id, attempt.steps
        if not isinstance(result, AttemptFailure):
            steps = [*steps, *((item.index, item.entry, now_ms) for item in result.entries)]
        for index, entry, at_ms in steps:
            self._step(trace, span_id, record.id, index, entry, at_ms)
        outcome, error = _outcome(result)
        attributes: dict[str, str | int] = {
            "durable.invocation_id": record.id, "durable.attempt": attempt.attempt, "durable.outcome": outcome,
            "durable.status": updated.status,
        }  # fmt: skip
        self._emit(
            f"attempt {attempt.attempt}", trace, span_id, trace.span_id, attempt.started_ms, now_ms,
            self._kind.CLIENT, attributes, error,
        )  # fmt: skip

    def _step(self, trace: _Trace, attempt_span: int, invocation_id: str, index: int, entry: Entry, at_ms: int) -> None:
        """The span of one journaled entry, or a note of a wait whose end comes later."""
        span_id = _span_id(invocation_id, "step", str(index))
        attributes = _step(index)
        if isinstance(entry, RunEntry):
            start = entry.started_ms or at_ms
            error = entry.failure.message if entry.failure is not None else None
            name = f"run {entry.name}"
            self._emit(name, trace, span_id, attempt_span, start, start + entry.duration_ms, None, attributes, error)
        elif isinstance(entry, SleepEntry):
            # The timer's due time is its end (it fires then, or as soon as the proxy is back).
            name = f"sleep {entry.name}".rstrip()
            self._emit(name, trace, span_id, trace.span_id, at_ms, entry.wake_at_ms, None, attributes)
        elif isinstance(entry, SendEntry):
            name = f"send {entry.service}/{entry.handler}"
            self._emit(name, trace, span_id, attempt_span, at_ms, at_ms, self._kind.PRODUCER, attributes)
        elif isinstance(entry, CallEntry) and entry.completed:
            # Failed on the spot (no such callee): no child will complete it later.
            error = entry.failure.message if entry.failure is not None else None
            name = f"call {entry.service}/{entry.handler}"
            self._emit(name, trace, span_id, trace.span_id, at_ms, at_ms, self._kind.CLIENT, attributes, error)
        elif isinstance(entry, AwakeableEntry | PromiseGetEntry):
            name = "awakeable" if isinstance(entry, AwakeableEntry) else f"promise {entry.name}"
            if entry.completed:
                self._emit(name, trace, span_id, trace.span_id, at_ms, at_ms, None, attributes)
                return
            waits = self._waits.setdefault(invocation_id, {})
            if len(waits) < _MAX_OPEN_WAITS:
                waits[index] = (name, at_ms)

    @_guarded
    def completed(self, record: InvocationRecord) -> None:
        """An invocation completed: emit its span, and for a call's child the caller's call span."""
        self._waits.pop(record.id, None)
        trace = self._trace_of(record)
        failure = record.failure
        attributes: dict[str, str | int] = {
            "durable.invocation_id": record.id, "durable.service": record.service, "durable.handler": record.handler,
            "durable.attempts": record.attempt, "durable.outcome": "failed" if failure is not None else "succeeded",
        }  # fmt: skip
        if record.key:
            attributes["durable.key"] = record.key
        end = record.completed_ms or record.modified_ms
        error = failure.message if failure is not None else None
        name = f"{record.service}/{record.handler}"
        self._emit(
            name, trace, trace.span_id, trace.parent_id, record.created_ms, end, self._kind.SERVER, attributes, error
        )
        if record.parent_id and trace.parent_id:
            caller = self._lookup(record.parent_id)
            if caller is not None:
                caller_trace = self._trace_of(caller)
                self._emit(
                    f"call {name}", caller_trace, trace.parent_id, caller_trace.span_id, record.created_ms, end,
                    self._kind.CLIENT, _step(record.parent_index), error,
                )  # fmt: skip

    def flush(self, timeout_ms: int = 2000) -> None:
        """Export what is queued, for at most `timeout_ms` (at shutdown: an unreachable collector
        must not hold up a SIGTERM; never on the hot path)."""
        self._processor.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter."""
        self._processor.shutdown()


def _step(index: int) -> dict[str, str | int]:
    return {"durable.journal.index": index}


def _outcome(result: Outcome | AttemptFailure) -> tuple[str, str | None]:
    """The attempt's outcome name, and the error of a failed one (its message only: never headers)."""
    if isinstance(result, AttemptFailure):
        return "transport_error", result.failure.message
    if isinstance(result, Completed):
        return "completed", None
    if isinstance(result, Suspended):
        return "suspended", None
    if isinstance(result, Failed):
        return "failed", result.failure.message
    assert isinstance(result, Errored)
    return "error", result.message
