"""A bounded slice of the ingress and admin fuzzing (`tests.component.fuzz`) against a real proxy
process behind uvicorn and httptools, with a real handler service: the same rule as in process
(no 5xx from the proxy, JSON errors, a refused request changes no row count of the store), over
real sockets, with a per-request deadline."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.component.fuzz import (
    LIVE_DEPLOYMENT,
    LIVE_INVOCATION,
    FuzzRequest,
    admin_requests,
    check,
    ingress_requests,
    is_refusal,
)
from tests.e2e.harness import Cluster, ProxyProc

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

#: 300 examples per API in CI (about 6 s each); ``FUZZ_PROCESS_EXAMPLES`` for a longer run.
SLICE = settings(
    max_examples=int(os.environ.get("FUZZ_PROCESS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
REQUEST_DEADLINE = 10.0
_UNSETTLED = ("running", "pending", "backing-off", "suspended", "scheduled")


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[ProxyProc]:
    handler = cluster.handler()
    yield cluster.proxy([handler])


def _settle(proxy: ProxyProc) -> None:
    """Until no invocation is on its way (what the last accepted request started has finished)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = proxy.stats()
        counts: dict[str, int] = stats["invocations"]
        if stats["running_attempts"] == 0 and not any(counts.get(status, 0) for status in _UNSETTLED):
            return
        time.sleep(0.02)
    raise AssertionError(f"invocations still on their way: {proxy.stats()['invocations']}")


def _live(proxy: ProxyProc, request: FuzzRequest) -> FuzzRequest:
    """`request` with its placeholders replaced by an invocation and a deployment that exist."""
    if LIVE_INVOCATION not in request.path and LIVE_DEPLOYMENT not in request.path:
        return request
    listed = proxy.http.get(proxy.admin + "/invocations", params={"limit": 1}).json()["invocations"]
    deployments = proxy.http.get(proxy.admin + "/deployments").json()["deployments"]
    invocation_id = listed[0]["id"] if listed else "inv_" + "1" * 26
    # Removing the one deployment would leave the rest of the run nothing to reach but 404s.
    deployment_id = deployments[0]["id"] if deployments and request.method != "DELETE" else "dp_none"
    path = request.path.replace(LIVE_INVOCATION, invocation_id).replace(LIVE_DEPLOYMENT, deployment_id)
    return dataclasses.replace(request, path=path)


def _exercise(proxy: ProxyProc, base: str, request: FuzzRequest) -> None:
    _settle(proxy)
    request = _live(proxy, request)
    before = proxy.counts()
    try:
        response = proxy.http.request(
            request.method, base + request.target, content=request.body or None, headers=request.raw_headers,
            timeout=REQUEST_DEADLINE,
        )  # fmt: skip
    except httpx.TimeoutException:
        raise AssertionError(f"no answer within {REQUEST_DEADLINE}s: {request}") from None
    headers: dict[str, Any] = {k.lower(): v for k, v in response.headers.items()}
    check(request, response.status_code, headers, response.content)
    if response.status_code == 202 and "executionTime" in response.text:
        # A delayed send would fire during a later example and change the store under it.
        invocation_id = response.json()["invocationId"]
        proxy.http.delete(f"{proxy.admin}/invocations/{invocation_id}", params={"mode": "kill"})
    if is_refusal(response.status_code, headers):
        _settle(proxy)
        assert proxy.counts() == before, f"{request}: refused with {response.status_code} but the store changed"


@SLICE
@given(request=ingress_requests)
def test_fuzz_the_ingress_of_a_real_proxy(proxy: ProxyProc, request: FuzzRequest) -> None:
    _exercise(proxy, proxy.ingress, request)


@SLICE
@given(request=admin_requests)
def test_fuzz_the_admin_api_of_a_real_proxy(proxy: ProxyProc, request: FuzzRequest) -> None:
    _exercise(proxy, proxy.admin, request)
