"""Component-test harness: in-process proxy + handler, both hops as ASGI apps in the test's loop.

    test ──httpx/ASGI──▶ proxy ingress / admin
                         proxy invoker ──httpx──▶ respx router ──ASGI──▶ handler app (handlers_sdk)
                         handler acks  ──httpx/ASGI──────────────────▶ proxy admin

The respx router between the invoker and the handler records every invoke request and can
answer in the handler's place (`Harness.plan`): faults are injected there.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import respx

from handlers_sdk.clock import FakeClock
from handlers_sdk.protocol import InvokeRequest
from handlers_sdk.server import HandlerApp
from proxy import Settings
from proxy.api.app import ProxyApps

HANDLER_URL = "http://handler.test"
WAIT_SECONDS = 5.0

#: A planned answer of the "handler": a response, an exception to raise, or None (pass through).
Planned = httpx.Response | Exception | Callable[[httpx.Request], Awaitable[httpx.Response]] | None


@dataclass
class Sent:
    """One invoke request the proxy sent to the handler service."""

    request: InvokeRequest
    at: float
    url: str


@dataclass
class Harness:
    """A started proxy with one registered handler deployment, and clients for both APIs."""

    settings: Settings
    apps: ProxyApps
    handler: HandlerApp
    router: respx.Router
    ingress: httpx.AsyncClient
    admin: httpx.AsyncClient
    sent: list[Sent] = field(default_factory=list)
    plan: list[Planned] = field(default_factory=list)
    #: The proxy's clock when the test passed a fake one.
    clock: FakeClock | None = None

    async def stop(self) -> None:
        """Stop the proxy (as SIGTERM would) before the test ends; stopping again is harmless."""
        await self.apps.runtime.stop()
        await self.handler.ack.aclose()

    # -- time -------------------------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Move the proxy's fake clock forward by `seconds`, then wait until what fell due has been
        committed (a write queued behind it returns)."""
        assert self.clock is not None, "start the harness with clock=FakeClock()"
        self.clock.advance(seconds)
        await self.flush()

    async def flush(self) -> None:
        """Let the proxy act on what is ready: run the loop, then one writer round trip."""
        for _ in range(5):
            await asyncio.sleep(0)
        await self.apps.runtime.writer.submit(lambda txn: None)
        for _ in range(5):
            await asyncio.sleep(0)

    async def advance_until(
        self, invocation_id: str, check: Callable[[dict[str, Any]], bool], step: float = 0.05, limit: float = 3600.0
    ) -> dict[str, Any]:
        """Advance the fake clock by `step` at a time (at most `limit` seconds in all) until
        `check(view)` holds for the invocation; then return its admin view."""
        moved = 0.0
        while True:
            view = await self.inspect(invocation_id)
            if check(view):
                return view
            if moved >= limit:
                raise AssertionError(f"condition not reached after {limit}s of fake time; last view: {view}")
            await self.advance(step)
            moved += step

    # -- API helpers --------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts of every LMDB database, from ``GET /stats``."""
        response = await self.admin.get("/stats")
        assert response.status_code == 200, response.text
        counts: dict[str, int] = response.json()["counts"]
        return counts

    async def inspect(self, invocation_id: str) -> dict[str, Any]:
        """``GET /invocations/{id}`` on the admin API."""
        response = await self.admin.get(f"/invocations/{invocation_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def send(self, path: str, body: Any = None, **kwargs: Any) -> str:
        """``POST {path}/send``: returns the invocation id of the 202."""
        response = await self.ingress.post(path + "/send", content=json.dumps(body), **kwargs)
        assert response.status_code == 202, response.text
        invocation_id: str = response.json()["invocationId"]
        return invocation_id

    async def wait_until(
        self, invocation_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        """Poll the admin view until `check(view)` holds."""
        view: dict[str, Any] = {}
        try:
            with anyio.fail_after(timeout):
                while True:
                    view = await self.inspect(invocation_id)
                    if check(view):
                        return view
                    await anyio.sleep(0.005)
        except TimeoutError:
            raise AssertionError(f"condition not reached; last view: {view}") from None

    async def wait_status(self, invocation_id: str, status: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """Poll until the invocation has `status`."""
        return await self.wait_until(invocation_id, lambda v: v["status"] == status, timeout)

    def attempts_of(self, invocation_id: str) -> list[Sent]:
        """Invoke requests sent for one invocation, in order."""
        return [s for s in self.sent if s.request.invocation_id == invocation_id]

    async def writer_blocked(self) -> Callable[[], Awaitable[None]]:
        """Occupy the writer thread, so that the writes queued meanwhile land in one commit batch.

        Returns the coroutine function that releases it (and waits for the blocker's commit).
        """
        release = threading.Event()
        entered = threading.Event()

        def block(txn: object) -> None:
            entered.set()
            release.wait(WAIT_SECONDS)

        blocker = asyncio.ensure_future(self.apps.runtime.writer.submit(block))
        with anyio.fail_after(WAIT_SECONDS):
            while not entered.is_set():
                await anyio.sleep(0.001)

        async def release_it() -> None:
            release.set()
            await blocker

        return release_it

    async def wait_queued(self, count: int) -> None:
        """Wait until `count` write requests are queued behind a blocked writer."""
        with anyio.fail_after(WAIT_SECONDS):
            while self.apps.runtime.writer._queue.qsize() < count:
                await anyio.sleep(0.001)


StartHarness = Callable[..., Awaitable[Harness]]


def settings_for(data_dir: Path, overrides: dict[str, Any]) -> Settings:
    """Fast test settings (short retries, small map) with `overrides`."""
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "transport": "httpx",
        "map_size": 64 * 1024**2,
        "max_map_size": 64 * 1024**2,
        "retry_initial_interval": 0.01,
        "retry_factor": 2.0,
        "retry_max_interval": 0.05,
        "retry_max_attempts": 50,
        "inactivity_timeout": 10.0,
        "body_read_timeout": 5.0,
    }
    base.update(overrides)
    return Settings(**base)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a response."""
    return msgspec.json.decode(response.content)
