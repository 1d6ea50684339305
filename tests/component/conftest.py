"""Fixtures of the component tests (the harness itself is in harness.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import handlers_sdk
from handlers_sdk.clock import FakeClock
from handlers_sdk.protocol import decode_invoke
from handlers_sdk.service import Service
from proxy import create_app
from proxy.engine.transport import HttpxTransport
from tests.component.harness import HANDLER_URL, Harness, Sent, StartHarness, settings_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[StartHarness]:
    """Factory: ``h = await start([service], mode="ack", clock=None, **settings)``; everything stops after
    the test. With a `FakeClock` the proxy's retries, timeouts, timers and retention move only when the
    test advances it (`Harness.advance`)."""
    stack = AsyncExitStack()
    count = 0

    async def _start(
        services: list[Service], *, mode: str = "ack", clock: FakeClock | None = None, **overrides: Any
    ) -> Harness:
        nonlocal count
        count += 1
        settings = settings_for(tmp_path / f"data{count}", overrides)
        router = respx.Router(assert_all_mocked=True, assert_all_called=False)
        proxy_to_handler = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        apps = create_app(
            settings, clock=clock, transport=HttpxTransport(settings.max_response_bytes, client=proxy_to_handler)
        )
        handler = handlers_sdk.app(services, mode=mode, ack_transport=httpx.ASGITransport(app=apps.callback))
        asgi = respx.ASGIHandler(handler)
        ingress = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.ingress), base_url="http://ingress.test")
        admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.admin), base_url="http://admin.test")
        harness = Harness(settings, apps, handler, router, ingress, admin, clock=clock)

        async def to_handler(request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/invoke/"):
                harness.sent.append(Sent(decode_invoke(request.content), time.monotonic(), str(request.url)))
                if harness.plan:
                    planned = harness.plan.pop(0)
                    if isinstance(planned, Exception):
                        raise planned
                    if isinstance(planned, httpx.Response):
                        return planned
                    if planned is not None:
                        return await planned(request)
            response: httpx.Response = await asgi(request)
            return response

        router.route(host=httpx.URL(HANDLER_URL).host).mock(side_effect=to_handler)

        await apps.runtime.start()
        stack.push_async_callback(admin.aclose)
        stack.push_async_callback(ingress.aclose)
        stack.push_async_callback(handler.ack.aclose)
        stack.push_async_callback(apps.runtime.stop)  # also closes proxy_to_handler
        response = await admin.post("/deployments", json={"uri": HANDLER_URL})
        # Restate's codes: 201 for a new deployment, 200 when the URI was registered before (a restart).
        assert response.status_code in (200, 201), response.text
        return harness

    yield _start
    await stack.aclose()
