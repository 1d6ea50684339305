"""Issue 15 (item 3): one invocation is one trace across real processes, exported over OTLP/HTTP.

The test runs a tiny OTLP collector (aiohttp on 127.0.0.1, ``POST /v1/traces``, protobuf decoded
with opentelemetry-proto); the proxy and the handler service export to it by the standard
``OTEL_*`` variables. The invocation retries once and sleeps, and the proxy is SIGKILLed during
the sleep: the attempt after the restart must join the same trace, under the same invocation span.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.harness import Cluster, free_port, poll

pytestmark = pytest.mark.e2e

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"


@dataclass(frozen=True)
class Span:
    """One received span, ids in hex."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class Collector:
    """An OTLP/HTTP trace receiver on a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="otlp-collector", daemon=True)

    async def _receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        with self._lock:
            for resource_spans in message.resource_spans:
                names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            Span(names[0], s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex())
                        )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def _serve(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            app = web.Application()
            app.router.add_post("/v1/traces", self._receive)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._started.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop.run_until_complete(main())
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "the collector did not start"

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    receiver.start()
    yield receiver
    receiver.stop()


def test_one_invocation_is_one_trace_across_retries_a_sleep_and_a_proxy_restart(
    cluster: Cluster, collector: Collector
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    handler = cluster.handler("tests.handlers.traced:application", env={**otel, "DURABLE_NAP": "1.5"})
    proxy = cluster.proxy([handler], services=("Traced",), env={**otel, "OTEL_SERVICE_NAME": "test-proxy"})

    traceparent = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    response = proxy.call("Traced/order/send", "book", headers={"traceparent": traceparent})
    assert response.status_code == 202, response.text
    inv: str = response.json()["invocationId"]
    proxy.wait_status(inv, "suspended", timeout=15)
    # Attempts 1 (failed) and 2 (suspended in the sleep) are exported before the proxy dies.
    poll(lambda: bool(collector.named("attempt 2")), 10, message="attempt 2 exported")
    proxy.kill()
    proxy.restart(services=("Traced",))
    proxy.wait_status(inv, "completed", timeout=15)
    assert proxy.output(inv).json() == "charged book"
    poll(lambda: bool(collector.named("Traced/order")), 10, message="the invocation span exported")

    spans = list(collector.spans)
    assert {s.trace_id for s in spans} == {INCOMING_TRACE}
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == [
        "Traced/order", "attempt 1", "attempt 2", "attempt 3", "ctx.run charge", "run charge", "sleep cool-off",
        "user.charge",
    ]  # fmt: skip
    (invocation,) = by_name["Traced/order"]
    assert invocation.service == "test-proxy" and invocation.parent_id == INCOMING_SPAN
    attempts = [by_name[f"attempt {n}"] for n in (1, 2, 3)]
    assert all(len(a) == 1 and a[0].parent_id == invocation.span_id for a in attempts)  # attempt 3: after the restart
    (run,) = by_name["run charge"]
    assert run.parent_id == attempts[1][0].span_id
    (sleep,) = by_name["sleep cool-off"]
    assert sleep.parent_id == invocation.span_id
    executions = by_name["ctx.run charge"]
    assert {e.service for e in executions} == {"traced-handler"}
    assert sorted(e.parent_id for e in executions) == sorted([attempts[0][0].span_id, attempts[1][0].span_id])
    users = by_name["user.charge"]
    assert sorted(u.parent_id for u in users) == sorted(e.span_id for e in executions)
    assert len({s.span_id for s in spans}) == len(spans)  # nothing exported twice
    time.sleep(0.2)  # a late duplicate from either process would show up here
    assert len(collector.spans) == len(spans)
