"""Authentication with real processes: the admin token (API and CLI), ingress keys (revoked by
SIGHUP and by the reload interval), ``ingress_private`` handlers, the refusal to start an open admin
API off loopback, and no secret in anything the proxy, the handler or the CLI wrote or answered.

One proxy (admin token file with two tokens, an ingress keys file with two keys, a signing key
file) and one handler service (`tests.handlers.guarded`) serve the whole module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.engine.identity import new_private_key_pem
from tests.e2e.harness import REPO, Cluster, HandlerProc, ProxyProc, free_port, poll

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "adm-e2e-5d41402abc4b2a76b9719d911017c592"
NEXT_ADMIN_TOKEN = "adm-e2e-7d793037a0760186574b0282f2f435e7"
INGRESS_KEY = "ing-e2e-c4ca4238a0b923820dcc509a6f75849b"
SECOND_KEY = "ing-e2e-c81e728d9d4c2f636f067f89cc14862c"


@dataclass
class World:
    """The module's proxy and handler, the secrets' files, and every answer the tests saw."""

    cluster: Cluster
    proxy: ProxyProc
    handler: HandlerProc
    keys_file: Path
    token_file: Path
    signing_pem: bytes
    seen: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """Every secret value, including each base64 line of the signing key's PEM."""
        pem_lines = [line for line in self.signing_pem.decode().splitlines() if line and not line.startswith("-----")]
        return [ADMIN_TOKEN, NEXT_ADMIN_TOKEN, INGRESS_KEY, SECOND_KEY, *pem_lines]

    def keep(self, response: httpx.Response) -> httpx.Response:
        self.seen.append(f"{response.status_code} {response.headers!r}\n{response.text}")
        return response

    def admin(self, method: str, path: str, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.keep(self.proxy.http.request(method, self.proxy.admin + path, headers=headers, **kwargs))

    def ingress(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = {"content-type": "application/json", **(headers or {})}
        url = f"{self.proxy.ingress}/{path}"
        return self.keep(self.proxy.http.post(url, content=json.dumps(body), headers=all_headers, timeout=30))

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
        full_env.update(PROXY_ADMIN_URL=self.proxy.admin, **(env or {}))
        done = subprocess.run(
            [sys.executable, "-m", "proxy", *args], cwd=REPO, env=full_env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        self.seen.append(f"cli {args} exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("security")
    token_file = tmp / "admin-token"
    token_file.write_text(f"# current and next (a rotation)\n{ADMIN_TOKEN}\n{NEXT_ADMIN_TOKEN}\n")
    keys_file = tmp / "ingress-keys"
    keys_file.write_text(f"# client one\n{INGRESS_KEY}\n# client two\n{SECOND_KEY}\n")
    signing = tmp / "signing.pem"
    signing_pem = new_private_key_pem()
    signing.write_bytes(signing_pem)
    for path in (token_file, keys_file, signing):
        path.chmod(0o600)
    cluster = Cluster(tmp)
    try:
        handler = cluster.handler("tests.handlers.guarded:application", name="guarded")
        env = {
            "PROXY_ADMIN_TOKEN_FILE": str(token_file),
            "PROXY_INGRESS_KEYS_FILE": str(keys_file),
            "PROXY_SIGNING_KEY_FILE": str(signing),
            "PROXY_CREDENTIALS_RELOAD_INTERVAL": "200ms",
            "PROXY_LOG_LEVEL": "debug",  # the most the proxy ever writes
        }
        proxy = cluster.proxy([handler], services=(), env=env)
        world = World(cluster, proxy, handler, keys_file, token_file, signing_pem)

        def registered() -> bool:
            return world.admin("GET", "/services/Back").status_code == 200

        poll(registered, 20, message="services registered")
        yield world
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def _report_processes(request: pytest.FixtureRequest, world: World) -> None:
    """Attach the processes' logs to a failure report (see `tests.e2e.plugin`)."""
    request.node._cluster = world.cluster


def _is_401(response: httpx.Response, source: str) -> bool:
    body = response.json()
    return response.status_code == 401 and body["error"] == "unauthorized" and body["source"] == source


# -- the admin API ----------------------------------------------------------------------------------


def test_the_admin_api_answers_401_without_the_token_and_works_with_either_token(world: World) -> None:
    assert _is_401(world.admin("GET", "/invocations", token=None), "admin")
    assert _is_401(world.admin("GET", "/invocations", token=INGRESS_KEY), "admin")
    assert _is_401(world.admin("GET", "/services", headers={"authorization": "Basic eDp5"}, token=None), "admin")
    for token in (ADMIN_TOKEN, NEXT_ADMIN_TOKEN):
        assert world.admin("GET", "/invocations", token=token).status_code == 200
    assert world.admin("GET", "/health", token=None).json() == {"status": "ok"}


def test_the_cli_sends_the_token_and_explains_a_401(world: World) -> None:
    done = world.cli("services", "ls", env={"PROXY_ADMIN_TOKEN_FILE": str(world.token_file)})
    assert done.returncode == 0, done.stderr
    assert "Front" in done.stdout and "Back" in done.stdout
    by_flag = world.cli("deployments", "ls", "--admin-token-file", str(world.token_file))
    assert by_flag.returncode == 0 and world.handler.url in by_flag.stdout, by_flag.stderr
    by_env = world.cli("invocations", "ls", "--all", env={"PROXY_ADMIN_TOKEN": NEXT_ADMIN_TOKEN})
    assert by_env.returncode == 0, by_env.stderr

    missing = world.cli("services", "ls")
    assert missing.returncode == 1
    assert "error: 401 unauthorized: the admin API needs a token: give it with --admin-token-file" in missing.stderr
    wrong = world.cli("services", "ls", env={"PROXY_ADMIN_TOKEN": INGRESS_KEY})
    assert wrong.returncode == 1 and "the admin token was refused" in wrong.stderr
    unreadable = world.cli("services", "ls", "--admin-token-file", str(world.token_file) + ".nope")
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr


# -- the ingress ------------------------------------------------------------------------------------


def test_the_ingress_needs_one_of_the_keys_and_forwards_none(world: World) -> None:
    assert _is_401(world.ingress("Front/greet", "Ada"), "ingress")
    assert _is_401(world.ingress("Front/greet", "Ada", {"x-api-key": ADMIN_TOKEN}), "ingress")
    assert world.ingress("Front/greet", "Ada", {"x-api-key": INGRESS_KEY}).json() == "psst, Ada"
    assert world.ingress("Front/greet", "Ada", {"authorization": f"Bearer {SECOND_KEY}"}).json() == "psst, Ada"
    assert world.proxy.http.get(world.proxy.ingress + "/restate/health").status_code == 200

    # The header that carried the key is not passed on: not to the handler, not into the store.
    seen = world.ingress("Front/headers", None, {"x-api-key": INGRESS_KEY, "x-trace": "t-1"})
    assert seen.status_code == 200, seen.text
    assert seen.json()["x-trace"] == "t-1" and "x-api-key" not in seen.json()
    by_bearer = world.ingress("Front/headers", None, {"authorization": f"Bearer {INGRESS_KEY}"})
    assert "authorization" not in by_bearer.json()
    export = world.admin("GET", f"/invocations/{seen.headers['x-restate-id']}/journal").json()
    assert "x-api-key" not in export["headers"] and export["headers"]["x-trace"] == "t-1"


def test_a_key_removed_from_the_file_is_refused_after_sighup_or_the_reload_interval(world: World) -> None:
    keys = {"x-api-key": SECOND_KEY}
    assert world.ingress("Front/greet", "Bo", keys).status_code == 200
    original = world.keys_file.read_text()
    try:
        world.keys_file.write_text(f"{INGRESS_KEY}\n# {SECOND_KEY[:8]}... revoked\n")
        world.proxy.signal(signal.SIGHUP)
        poll(lambda: world.ingress("Front/greet", "Bo", keys).status_code == 401, 5, message="revoked by SIGHUP")
        assert world.ingress("Front/greet", "Bo", {"x-api-key": INGRESS_KEY}).status_code == 200
        # Put back without a signal: the reload interval (200ms here) finds the edit.
        world.keys_file.write_text(original)
        poll(lambda: world.ingress("Front/greet", "Bo", keys).status_code == 200, 5, message="re-read on interval")
    finally:
        world.keys_file.write_text(original)
    assert world.proxy.alive


# -- ingress_private ----------------------------------------------------------------------------------


def test_a_private_handler_is_refused_at_the_ingress_and_called_by_other_handlers(world: World) -> None:
    keys = {"x-api-key": INGRESS_KEY}
    for path in ("Back/secret", "Back/secret/send", "restate/call/Back/secret", "restate/send/Back/secret"):
        refused = world.ingress(path, "Ada", keys)
        assert refused.status_code == 400, (path, refused.text)
        assert refused.json()["message"].startswith("the invoked service is not public: Back/secret")
    assert world.ingress("Front/internal", None, keys).status_code == 400
    assert world.ingress("Back/hello", "Ada", keys).json() == "hello Ada"
    # Front/greet calls Back/secret from its handler: that call does not go through the ingress.
    called = world.ingress("Front/greet", "Cy", keys)
    assert called.status_code == 200 and called.json() == "psst, Cy"
    back = world.admin("GET", "/services/Back").json()
    assert back["public"] is False
    assert {h["name"]: h["public"] for h in back["handlers"]} == {"secret": False, "hello": True}
    front = world.admin("GET", "/services/Front").json()
    assert front["public"] is True
    assert {h["name"]: h["public"] for h in front["handlers"]} == {"greet": True, "internal": False, "headers": True}


# -- start-up -----------------------------------------------------------------------------------------


def _start_refused(world: World, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    full_env.update(env)
    argv = [
        sys.executable, "-m", "proxy", "--data-dir", str(world.cluster.tmp_path / "refused"),
        "--ingress-port", str(free_port()), "--admin-port", str(free_port()), "--callback-port", str(free_port()),
        *args,
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60, check=False)
    world.seen.append(f"start {args} exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def test_an_open_admin_api_off_loopback_refuses_to_start(world: World) -> None:
    done = _start_refused(world, ["--admin-host", "0.0.0.0"], {})
    assert done.returncode == 2, done.stderr
    assert "refusing to start: the admin API would listen on 0.0.0.0" in done.stderr
    assert "--admin-token-file" in done.stderr and "--admin-insecure" in done.stderr
    short = _start_refused(world, [], {"PROXY_ADMIN_TOKEN": "hunter2"})
    assert short.returncode == 2 and "PROXY_ADMIN_TOKEN: a token must be" in short.stderr
    assert "hunter2" not in short.stderr
    empty = world.cluster.tmp_path / "empty-keys"
    empty.write_text("# nobody yet\n")
    no_keys = _start_refused(world, ["--ingress-keys-file", str(empty)], {})
    assert no_keys.returncode == 2 and "holds no key" in no_keys.stderr
    assert not (world.cluster.tmp_path / "refused" / "data.mdb").exists(), "refused before opening the store"


# -- no secret anywhere --------------------------------------------------------------------------------


def test_no_secret_appears_in_logs_answers_metrics_or_the_page(world: World) -> None:
    # Everything that could echo a secret, once more (the tests above add to `seen` too).
    world.admin("GET", "/invocations", token=ADMIN_TOKEN[:-1] + "x")
    world.admin("GET", "/invocations", headers={"authorization": f"Bearer {ADMIN_TOKEN} {INGRESS_KEY}"}, token=None)
    world.ingress("Front/greet", "Di", {"x-api-key": SECOND_KEY + "x"})
    world.ingress("Front/greet", "Di", {"x-api-key": INGRESS_KEY})
    world.cli("services", "ls", env={"PROXY_ADMIN_TOKEN": ADMIN_TOKEN + "0"})
    metrics = world.admin("GET", "/metrics")
    assert metrics.status_code == 200 and "durable_" in metrics.text
    for path in ("/ui", "/ui/app.js", "/ui/style.css", "/openapi", "/stats", "/version", "/identity"):
        world.admin("GET", path)
    listed = world.admin("GET", "/invocations?limit=1000").json()["invocations"]
    for view in listed[:50]:
        world.admin("GET", f"/invocations/{view['id']}")
    world.proxy.signal(signal.SIGHUP)  # a reload logs what it read
    poll(lambda: "secret(s) read from" in world.proxy.log_path.read_text(), 5, message="reload logged")

    corpus = {
        "proxy log": world.proxy.log_path.read_text(errors="replace"),
        "handler log": world.handler.log_path.read_text(errors="replace"),
        **{f"answer {i}": text for i, text in enumerate(world.seen)},
    }
    assert len(corpus) > 20
    leaks = [(secret[:12], where) for secret in world.secrets() for where, text in corpus.items() if secret in text]
    assert not leaks, f"secrets found (first characters, where): {leaks}"
