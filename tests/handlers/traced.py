"""A handler service that exports its spans over OTLP, for the tracing end-to-end test.

``Traced/order`` runs a step that fails on its first execution in this process (a retry), with
a span of the user's own inside it, then sleeps ``DURABLE_NAP`` seconds (a suspension).

Run: ``OTEL_EXPORTER_OTLP_ENDPOINT=... uvicorn tests.handlers.traced:application``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from opentelemetry import trace

from handlers_sdk import Context, Service, app
from handlers_sdk.tracing import configure

__all__ = ["application", "traced"]

configure(service_name="traced-handler")

traced = Service("Traced")
_executions = {"charge": 0}


@traced.handler()
async def order(ctx: Context, item: str) -> str:
    """Charge (failing once), then sleep: three attempts, one trace."""

    def charge() -> str:
        _executions["charge"] += 1
        with trace.get_tracer("shop").start_as_current_span("user.charge"):
            if _executions["charge"] == 1:
                raise RuntimeError("card network flaked")
        return f"charged {item}"

    charged: str = await ctx.run("charge", charge)
    await ctx.sleep(timedelta(seconds=float(os.environ.get("DURABLE_NAP", "0.2"))), name="cool-off")
    return charged


application = app([traced])
