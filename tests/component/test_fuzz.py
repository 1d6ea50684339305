"""Fuzzing the ingress and admin APIs in process (hypothesis; strategies in `tests.component.fuzz`).

Every generated request must get an answer within a deadline, never a 5xx from the proxy, the
JSON error shape on errors, and, when the API refused it, a store byte-for-byte as it was. The
proxy runs on a fake clock, so nothing changes the store between two requests but the requests
and the invocations they started (the test waits for those to settle first).

The profile (``HYPOTHESIS_PROFILE``): ``ci`` (default: 1,000 examples per API, about 10 s in all)
or ``fuzz-long`` (examples set by ``FUZZ_EXAMPLES``; 30,000 per API took 6.5 min).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings

from durable_core.txn import DBS
from handlers_sdk.clock import FakeClock
from tests.component.fuzz import (
    LIVE_DEPLOYMENT,
    LIVE_INVOCATION,
    FuzzRequest,
    admin_requests,
    check,
    ingress_requests,
    is_refusal,
)
from tests.component.harness import Harness, StartHarness
from tests.component.test_ingress_limits import services

settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
settings.register_profile(
    "fuzz-long",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120 if PROFILE == "ci" else 7200)]
#: Seconds one request may take: every route answers at once or waits on a fast handler.
REQUEST_DEADLINE = 5.0


def digest(h: Harness) -> str:
    """A hash of every row of every database: equal digests, an unchanged store."""
    sha = hashlib.sha256()
    with h.apps.runtime.store.read() as txn:
        for name in DBS:
            sha.update(name.encode() + b"\x00")
            for key, value in txn.items_from(name, b""):
                sha.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return sha.hexdigest()


async def settle(h: Harness) -> None:
    """Wait until no attempt runs and the writer is idle (what earlier examples started is done)."""
    for _ in range(400):
        if not h.apps.runtime.invoker.active and h.apps.runtime.writer.queued == 0:
            await h.flush()
            if not h.apps.runtime.invoker.active:
                return
        await asyncio.sleep(0.005)
    raise AssertionError(f"attempts still running: {list(h.apps.runtime.invoker.active)}")


def live(h: Harness, request: FuzzRequest) -> FuzzRequest:
    """`request` with its placeholders replaced by an invocation and a deployment of the store."""
    if LIVE_INVOCATION not in request.path and LIVE_DEPLOYMENT not in request.path:
        return request
    with h.apps.runtime.store.read() as txn:
        first = next(iter(txn.items_from("invocations", b"")), None)
        deployment = next(iter(txn.items_from("deployments", b"")), None)
    invocation_id = first[0].decode() if first else "inv_" + "1" * 26
    # Removing the one deployment would leave the rest of the run nothing to reach but 404s.
    deployment_id = deployment[0].decode() if deployment and request.method != "DELETE" else "dp_none"
    path = request.path.replace(LIVE_INVOCATION, invocation_id).replace(LIVE_DEPLOYMENT, deployment_id)
    return dataclasses.replace(request, path=path)


async def exercise(h: Harness, client: httpx.AsyncClient, request: FuzzRequest) -> None:
    """Send `request`; check the answer, and the store when the request was refused."""
    await settle(h)
    request = live(h, request)
    before = digest(h)
    try:
        response = await asyncio.wait_for(
            # An absolute URL: httpx refuses a relative one whose path starts with "//".
            client.request(
                request.method,
                str(client.base_url).rstrip("/") + request.target,
                content=request.body or None,
                headers=request.raw_headers,
            ),
            REQUEST_DEADLINE,
        )
    except TimeoutError:
        raise AssertionError(f"no answer within {REQUEST_DEADLINE}s: {request}") from None
    headers = {k.lower(): v for k, v in response.headers.items()}
    event(f"{response.status_code} {headers.get('x-restate-error-source', '')}")
    check(request, response.status_code, headers, response.content)
    if response.status_code == 202 and b"executionTime" in response.content:
        # A delayed send never starts on the fake clock: kill it, or an attach to it (a later
        # example's) would wait for ever, as it should, and read as a hang.
        killed = await h.admin.delete(f"/invocations/{response.json()['invocationId']}", params={"mode": "kill"})
        # 409: a repeated idempotency key answered with one killed before (completed already).
        assert killed.status_code < 300 or killed.status_code == 409, killed.text
    h.sent.clear()  # the invoke requests the harness recorded: not needed here, and they add up
    if is_refusal(response.status_code, headers):
        await settle(h)
        assert digest(h) == before, f"{request}: refused with {response.status_code} but the store changed"


class Target:
    """The harness under fuzz, with a short repr (hypothesis prints the arguments of a failure)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def __repr__(self) -> str:
        return "<proxy under fuzz>"


@pytest.fixture
async def target(start: StartHarness) -> Target:
    harness = await start(services(), clock=FakeClock(1_700_000_000_000))
    # A registration of any other host is refused as a real network would (not by respx's
    # "not mocked" assertion, which no proxy code is meant to handle).
    harness.router.route().mock(side_effect=httpx.ConnectError("no such host"))
    return Target(harness)


@settings(settings.get_profile(PROFILE))
@given(request=ingress_requests)
async def test_fuzz_the_ingress(target: Target, request: FuzzRequest) -> None:
    await exercise(target.harness, target.harness.ingress, request)


@settings(settings.get_profile(PROFILE))
@given(request=admin_requests)
async def test_fuzz_the_admin_api(target: Target, request: FuzzRequest) -> None:
    await exercise(target.harness, target.harness.admin, request)
