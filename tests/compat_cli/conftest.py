"""Fixtures of the Restate CLI suite: the ``restate`` binary from npm (installed once into a cache
directory), and one proxy with the examples for the whole module.

Skipped, with the reason, where node/npm is missing or the npm registry cannot be reached. The CLI
version is pinned (`RESTATE_CLI_VERSION`, overridable with the environment variable of that name) so
a run is reproducible; the cache lives in ``$DURABLE_PROXY_TEST_CACHE`` (default
``~/.cache/durable-proxy-tests``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Cluster, HandlerProc, ProxyProc

__all__ = ["Restate", "restate", "restate_bin", "world"]

RESTATE_CLI_VERSION = os.environ.get("RESTATE_CLI_VERSION", "1.7.12")
_CACHE = Path(os.environ.get("DURABLE_PROXY_TEST_CACHE", str(Path.home() / ".cache" / "durable-proxy-tests")))
_EXAMPLE_SERVICES = ("Counter", "Greeter", "Signup", "Review", "Summarizer", "OrderFulfillment")


def _install(prefix: Path) -> Path:
    """``npm install @restatedev/restate@VERSION`` into `prefix` (once); the ``restate`` binary, or skip."""
    binary = prefix / "node_modules" / ".bin" / "restate"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to install Restate's CLI (@restatedev/restate)")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        package = f"@restatedev/restate@{RESTATE_CLI_VERSION}"
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("npm install @restatedev/restate timed out (is the npm registry reachable?)")
    if done.returncode != 0 or not binary.exists():
        pytest.skip(f"cannot install @restatedev/restate@{RESTATE_CLI_VERSION} from npm: {done.stderr.strip()[-500:]}")
    return binary


@pytest.fixture(scope="session")
def restate_bin() -> Path:
    """The ``restate`` binary of `RESTATE_CLI_VERSION`."""
    binary = _install(_CACHE / f"restate-cli-{RESTATE_CLI_VERSION}")
    probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the installed restate CLI does not run here: {probe.stderr.strip()[-300:]}")
    return binary


@dataclass
class World:
    """One proxy with every example registered, and the example handler process."""

    cluster: Cluster
    proxy: ProxyProc
    examples: HandlerProc

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.proxy.http.request(method, self.proxy.admin + path, **kwargs)

    def deployment_ids(self) -> dict[str, str]:
        """uri -> id of every deployment."""
        return {d["uri"]: d["id"] for d in self.admin("GET", "/deployments").json()["deployments"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    cluster = Cluster(tmp_path_factory.mktemp("restate-cli"))
    try:
        examples = cluster.handler("examples.all:application", name="examples")
        proxy = cluster.proxy([examples], services=_EXAMPLE_SERVICES)
        yield World(cluster, proxy, examples)
    finally:
        cluster.close()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Restate:
    """Runs ``restate ...`` against the world's proxy (its own config dir; no colours, no prompts)."""

    def __init__(self, binary: Path, world: World, home: Path) -> None:
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "RESTATE_CLI_CONFIG_HOME": str(home / "restate"),
            "RESTATE_ADMIN_URL": world.proxy.admin,
            "RESTATE_INGRESS_URL": world.proxy.ingress,
            "NO_COLOR": "1",
            "TERM": "dumb",
        }

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Result:
        done = subprocess.run(
            [str(self.binary), *args], env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def restate(restate_bin: Path, world: World, tmp_path: Path) -> Restate:
    return Restate(restate_bin, world, tmp_path)
