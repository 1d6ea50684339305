"""Restate's CLI against a proxy whose admin API needs a token: it sends ``RESTATE_AUTH_TOKEN`` as
``Authorization: Bearer`` to every path (``/version`` included), and without it gets the 401."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.compat_cli.conftest import Restate, World
from tests.e2e.harness import Cluster, poll

TOKEN = "adm-cli-31d5f2b0c8a94e6d7a1b"


@pytest.fixture(scope="module")
def guarded_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("restate-cli-auth")
    token_file = tmp / "admin-token"
    token_file.write_text(TOKEN + "\n")
    cluster = Cluster(tmp)
    try:
        examples = cluster.handler("examples.all:application", name="examples")
        proxy = cluster.proxy([examples], services=(), env={"PROXY_ADMIN_TOKEN_FILE": str(token_file)})
        headers = {"authorization": f"Bearer {TOKEN}"}

        def registered() -> bool:
            return httpx.get(f"{proxy.admin}/services/Greeter", headers=headers, timeout=2).status_code == 200

        poll(registered, 20, message="Greeter registered")
        yield World(cluster, proxy, examples)
    finally:
        cluster.close()


def test_the_restate_cli_sends_its_auth_token(restate_bin: Path, guarded_world: World, tmp_path: Path) -> None:
    restate = Restate(restate_bin, guarded_world, tmp_path)
    with_token = {"RESTATE_AUTH_TOKEN": TOKEN}
    whoami = restate("whoami", env=with_token)
    assert whoami.code == 0 and "is healthy" in whoami.out, whoami
    assert "Could not verify the admin API version" not in whoami.out + whoami.err, whoami
    listed = restate("services", "list", env=with_token)
    assert listed.code == 0 and "Greeter" in listed.out, listed

    refused = restate("services", "list")
    assert refused.code != 0, refused
    assert "401" in refused.out + refused.err or "nauthorized" in refused.out + refused.err, refused
    wrong = restate("services", "list", env={"RESTATE_AUTH_TOKEN": TOKEN[:-1] + "x"})
    assert wrong.code != 0, wrong
    for result in (whoami, listed, refused, wrong):
        assert TOKEN not in result.out + result.err
