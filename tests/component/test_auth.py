"""Admin-token and ingress-key authentication on the in-process apps (`proxy.api.auth`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.api.app import ProxyApps, create_app
from proxy.credentials import Credentials, KeyRing
from tests.component.harness import settings_for

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "adm-7f3c9a1e5b2d4c6f8a0b"
INGRESS_KEY = "ing-1b2c3d4e5f60718293a4"
SECOND_KEY = "ing-aaaabbbbccccddddeeee"
SECRETS = (ADMIN_TOKEN, INGRESS_KEY, SECOND_KEY)


@dataclass
class Apps:
    apps: ProxyApps
    admin: httpx.AsyncClient
    ingress: httpx.AsyncClient
    keys_file: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Apps]:
    keys_file = tmp_path / "ingress-keys"
    keys_file.write_text(f"# client one\n{INGRESS_KEY}\n# client two\n{SECOND_KEY}\n")
    settings = settings_for(tmp_path / "data", {"ingress_keys_file": str(keys_file), "credentials_reload_interval": 0})
    credentials = Credentials(
        admin=KeyRing("admin token", keys=(ADMIN_TOKEN,)),
        ingress=KeyRing("ingress keys", path=str(keys_file)),
    )
    apps = create_app(settings, credentials=credentials)
    await apps.runtime.start()
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.admin), base_url="http://admin.test")
    ingress = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.ingress), base_url="http://ingress.test")
    try:
        yield Apps(apps, admin, ingress, keys_file)
    finally:
        await admin.aclose()
        await ingress.aclose()
        await apps.runtime.stop()


def _assert_401(response: httpx.Response, source: str, *, invalid: bool) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == 401 and body["error"] == "unauthorized" and body["source"] == source
    assert response.headers["content-type"] == "application/json"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{source}"')
    assert ('error="invalid_token"' in challenge) is invalid
    for secret in SECRETS:
        assert secret not in response.text and secret not in str(response.headers)


async def test_the_admin_api_needs_the_token(world: Apps) -> None:
    _assert_401(await world.admin.get("/invocations"), "admin", invalid=False)
    malformed_values = ("Basic YWRtaW46", "Bearer", "Bearer  ", f"Token {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN} x")
    for malformed in malformed_values:
        response = await world.admin.get("/invocations", headers={"authorization": malformed})
        _assert_401(response, "admin", invalid=False)
        assert "malformed Authorization header" in response.json()["message"]
    wrong = await world.admin.get("/invocations", headers={"authorization": f"Bearer {INGRESS_KEY}"})
    _assert_401(wrong, "admin", invalid=True)
    assert wrong.json()["message"] == "the Authorization header does not carry a valid admin token"
    for path in ("/services", "/deployments", "/stats", "/metrics", "/version", "/v1/version", "/v4/services"):
        _assert_401(await world.admin.get(path), "admin", invalid=False)
    posted = await world.admin.post("/deployments", json={"uri": "http://127.0.0.1:1"})
    _assert_401(posted, "admin", invalid=False)


async def test_the_admin_api_answers_with_the_token(world: Apps) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"authorization": f"{scheme} {ADMIN_TOKEN}"}
        assert (await world.admin.get("/invocations", headers=headers)).status_code == 200
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await world.admin.get("/v4/services", headers=headers)).json() == {"services": []}
    assert (await world.admin.get("/version", headers=headers)).status_code == 200


async def test_health_the_web_page_and_the_step_acks_stay_open(world: Apps) -> None:
    assert (await world.admin.get("/health")).json() == {"status": "ok"}
    assert (await world.admin.get("/v1/health")).status_code == 200
    page = await world.admin.get("/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (await world.admin.get("/ui/app.js")).status_code == 200
    assert (await world.admin.get("/")).status_code == 307
    # The acks are fenced by each attempt's token, not the admin token: a bad body is a 400, not a 401.
    ack = await world.admin.post("/internal/v1/entries", content=b"{}", headers={"content-type": "application/json"})
    assert ack.status_code != 401, ack.text
    # Only reads of the page are open.
    _assert_401(await world.admin.post("/ui"), "admin", invalid=False)


async def test_the_ingress_needs_a_key(world: Apps) -> None:
    response = await world.ingress.post("/Greeter/greet", json="Ada")
    _assert_401(response, "ingress", invalid=False)
    assert "x-api-key" in response.json()["message"]
    for headers in (
        {"x-api-key": ADMIN_TOKEN},
        {"authorization": f"Bearer {ADMIN_TOKEN}"},
        {"x-api-key": INGRESS_KEY[:-1]},
    ):
        _assert_401(await world.ingress.post("/Greeter/greet", json="Ada", headers=headers), "ingress", invalid=True)
    _assert_401(
        await world.ingress.post("/Greeter/greet", json="Ada", headers={"authorization": f"Basic {INGRESS_KEY}"}),
        "ingress",
        invalid=False,
    )
    for path in ("/restate/invocation/inv_1/output", "/restate/awakeables/awk_1/resolve", "/restate/call/A/b"):
        _assert_401(await world.ingress.post(path), "ingress", invalid=False)


async def test_the_ingress_takes_any_listed_key_in_either_header(world: Apps) -> None:
    # Past authentication the call reaches routing: no such service here, Restate's 404.
    for headers in ({"x-api-key": INGRESS_KEY}, {"authorization": f"Bearer {SECOND_KEY}"}):
        response = await world.ingress.post("/Greeter/greet", json="Ada", headers=headers)
        assert response.status_code == 404, response.text
        assert response.json()["message"] == "service 'Greeter' not found"


async def test_health_and_cors_preflights_stay_open_on_the_ingress(world: Apps) -> None:
    assert (await world.ingress.get("/health")).status_code == 200
    assert (await world.ingress.get("/restate/health")).status_code == 200
    preflight = await world.ingress.options(
        "/Greeter/greet",
        headers={
            "origin": "http://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-api-key, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    assert preflight.headers["access-control-allow-headers"] == "x-api-key, content-type"
    # The refusal carries the CORS headers, so a browser's page can read it.
    refused = await world.ingress.post("/Greeter/greet", json="Ada", headers={"origin": "http://app.example"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "http://app.example"


async def test_a_revoked_key_is_refused_after_a_reload(world: Apps) -> None:
    headers = {"x-api-key": SECOND_KEY}
    assert (await world.ingress.post("/Greeter/greet", json="Ada", headers=headers)).status_code == 404
    world.keys_file.write_text(f"{INGRESS_KEY}\n# {SECOND_KEY} revoked\n")
    world.apps.credentials.reload()  # what SIGHUP does
    _assert_401(await world.ingress.post("/Greeter/greet", json="Ada", headers=headers), "ingress", invalid=True)
    still = await world.ingress.post("/Greeter/greet", json="Ada", headers={"x-api-key": INGRESS_KEY})
    assert still.status_code == 404


async def test_without_credentials_both_apis_stay_open(tmp_path: Path) -> None:
    apps = create_app(settings_for(tmp_path / "data", {}), credentials=Credentials(KeyRing("a"), KeyRing("i")))
    await apps.runtime.start()
    try:
        transport = httpx.ASGITransport(app=apps.admin)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as admin:
            assert (await admin.get("/invocations")).status_code == 200
        transport = httpx.ASGITransport(app=apps.ingress)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress.test") as ingress:
            assert (await ingress.post("/Greeter/greet", json="Ada")).status_code == 404
    finally:
        await apps.runtime.stop()


async def test_refusals_are_counted_by_api(world: Apps) -> None:
    for _ in range(3):
        await world.admin.get("/stats")
    for _ in range(2):
        await world.ingress.post("/Greeter/greet", json="Ada", headers={"x-api-key": "nope-nope-nope-nope"})
    metrics = await world.admin.get("/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert 'durable_unauthorized_total{api="admin"} 3' in metrics.text
    assert 'durable_unauthorized_total{api="ingress"} 2' in metrics.text
