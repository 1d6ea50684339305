"""The proxy's signing key (`proxy.engine.identity`): where it comes from, that it is kept, that a
replaced key file is picked up, and that the proxy's invokes and discovery requests verify at a
handler service with the matching `identity_keys` (in process; tests/e2e/test_signed_invocations.py
does the same with real processes).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import handlers_sdk
from handlers_sdk import Context, Service
from handlers_sdk.clock import FakeClock
from handlers_sdk.identity import IdentityError, Verifier
from proxy import create_app
from proxy.api.app import ProxyApps
from proxy.engine.identity import (
    KEY_FILE_NAME,
    SigningKeyError,
    load_private_key,
    new_private_key_pem,
    public_key_of,
    write_key_file,
)
from proxy.engine.runtime import Runtime
from proxy.engine.transport import HttpxTransport
from tests.component.harness import settings_for
from tests.postgres import PgCluster, pg_cluster

__all__ = ["pg_cluster"]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

HANDLER_URL = "http://handler.test"

greeter = Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    shout = await ctx.run("shout", lambda: name.upper())
    return f"Hello, {shout}!"


def _key_file(path: Path) -> tuple[Path, str]:
    pem = new_private_key_pem()
    write_key_file(path, pem)
    return path, public_key_of(load_private_key(pem, str(path)))


def _pem_body(path: Path) -> str:
    """The base64 line of a PEM key file: what must never show up anywhere."""
    return path.read_text().splitlines()[1]


@asynccontextmanager
async def _runtime(tmp_path: Path, clock: FakeClock | None = None, **overrides: Any) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings_for(tmp_path / "data", overrides), clock=clock)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@asynccontextmanager
async def _proxy_and_handler(tmp_path: Path, identity_keys: list[str], **overrides: Any) -> AsyncIterator[ProxyApps]:
    """A proxy whose transport reaches an in-process handler service (suspend mode: no acks)."""
    handler = handlers_sdk.app([greeter], mode="suspend", identity_keys=identity_keys)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=handler))
    settings = settings_for(tmp_path / "data", overrides)
    apps = create_app(settings, transport=HttpxTransport(settings.max_response_bytes, client=client))
    await apps.runtime.start()
    try:
        yield apps
    finally:
        await apps.runtime.stop()


async def test_first_start_creates_a_key_readable_by_the_owner_only_and_keeps_it(tmp_path: Path) -> None:
    async with _runtime(tmp_path) as runtime:
        first = runtime.identity.view()
    key_file = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.source == "data-dir" and first.key_file == str(key_file)
    assert first.public_key.startswith("publickeyv1_")
    async with _runtime(tmp_path) as runtime:
        assert runtime.identity.public_key == first.public_key


async def test_a_given_key_file_is_used(tmp_path: Path) -> None:
    key_file, public_key = _key_file(tmp_path / "mine.pem")
    async with _runtime(tmp_path, signing_key_file=str(key_file)) as runtime:
        assert runtime.identity.view().source == "file"
        assert runtime.identity.public_key == public_key
    assert not (tmp_path / "data" / KEY_FILE_NAME).exists()


async def test_an_unusable_key_file_stops_the_start_without_quoting_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SigningKeyError, match=r"cannot read the signing key file .*missing\.pem"):
        async with _runtime(tmp_path, signing_key_file=str(missing)):
            pass
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nTUlJQ1NFQ1JFVA==\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key") as info:
        async with _runtime(tmp_path, signing_key_file=str(garbage)):
            pass
    assert "TUlJQ1NFQ1JFVA" not in str(info.value)
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningKeyError, match="not Ed25519"):
        async with _runtime(tmp_path, signing_key_file=str(p256)):
            pass


async def test_a_replaced_key_file_rotates_the_key_and_a_bad_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    key_file, old_key = _key_file(tmp_path / "key.pem")
    async with _runtime(tmp_path, clock=clock, signing_key_file=str(key_file)) as runtime:
        identity = runtime.identity

        def verifies_with(public_key: str) -> bool:
            verifier = Verifier([public_key], clock=lambda: clock.now_ms() / 1000)
            headers = {**identity.headers("POST", "/invoke/A/b", b"{}", HANDLER_URL), "host": "handler.test"}
            try:
                verifier.verify("POST", "/invoke/A/b", headers, b"{}")
            except IdentityError:
                return False
            return True

        assert verifies_with(old_key)
        new_file, new_key = _key_file(tmp_path / "new.pem")
        secrets = [_pem_body(key_file), _pem_body(new_file)]
        os.replace(new_file, key_file)  # as an operator rotates: an atomic rename over the old file
        assert verifies_with(old_key), "checked at most once a second"
        clock.advance(1.0)
        assert verifies_with(new_key) and not verifies_with(old_key)
        assert identity.public_key == new_key
        assert "request identity key rotated: now signing with " + new_key in caplog.text

        key_file.write_text("not a key")
        clock.advance(1.0)
        assert verifies_with(new_key)
        assert "still signing with " + new_key in caplog.text
    assert not any(secret in caplog.text for secret in secrets)


async def test_the_proxy_signs_discovery_and_invokes_and_a_handler_verifies_them(tmp_path: Path) -> None:
    key_file, public_key = _key_file(tmp_path / "key.pem")
    async with _proxy_and_handler(tmp_path, [public_key], signing_key_file=str(key_file)) as apps:
        admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.admin), base_url="http://admin.test")
        ingress = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.ingress), base_url="http://ingress.test")
        async with admin, ingress:
            registered = await admin.post("/deployments", json={"uri": HANDLER_URL})
            assert registered.status_code == 201, registered.text
            response = await ingress.post("/Greeter/greet", json="Ada")
            assert response.status_code == 200, response.text
            assert response.json() == "Hello, ADA!"
            shown = await admin.get("/identity")
    assert shown.status_code == 200
    assert shown.json() == {
        "public_key": public_key,
        "signature_scheme": "v1",
        "algorithm": "EdDSA (Ed25519)",
        "source": "file",
        "key_file": str(key_file),
        "validity_seconds": 60,
    }
    assert _pem_body(key_file) not in shown.text


async def test_a_handler_that_trusts_another_key_refuses_the_proxys_discovery(tmp_path: Path) -> None:
    _, other_key = _key_file(tmp_path / "other.pem")
    async with _proxy_and_handler(tmp_path, [other_key]) as apps:
        admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=apps.admin), base_url="http://a.test")
        async with admin:
            registered = await admin.post("/deployments", json={"uri": HANDLER_URL})
    assert registered.status_code == 400, registered.text
    assert "answered 401" in registered.json()["message"]


async def test_proxies_on_one_database_sign_with_the_key_the_store_holds(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.fresh_database("signing")
    async with _runtime(tmp_path, store=url) as runtime:
        first = runtime.identity.view()
    assert first.source == "store" and first.key_file == ""
    async with _runtime(tmp_path / "another", store=url) as runtime:
        assert runtime.identity.public_key == first.public_key
    assert not (tmp_path / "data" / KEY_FILE_NAME).exists()
