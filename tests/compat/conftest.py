"""Fixtures of the compatibility suite: Restate's TypeScript ingress client installed from npm once
per machine (a cache dir), and one proxy with the examples for the whole module.

Skipped, with the reason, where node or npm is missing or the registry cannot be reached.
Set ``RESTATE_CLIENTS_VERSION`` to try another version of the client (default: the latest 1.x).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, ProxyProc

__all__ = ["clients_dir", "examples_proxy"]

#: The version range installed: the client's major version, not one release.
CLIENTS_VERSION = os.environ.get("RESTATE_CLIENTS_VERSION", "^1")
PACKAGE = "@restatedev/restate-sdk-clients"
#: The examples' services (examples.all:application).
EXAMPLES = ("OrderFulfillment", "Greeter", "Counter", "Signup", "Summarizer", "Review")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "durable-proxy-tests"


@pytest.fixture(scope="session")
def clients_dir() -> Path:
    """A directory whose ``node_modules`` holds Restate's ingress client (installed once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run Restate's TypeScript client (not on PATH)")
    major = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.match(r"v(\d+)", major)
    if match is None or int(match.group(1)) < 18:
        pytest.skip(f"Restate's client needs node 18 or later (fetch); found {major or 'nothing'}")
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", CLIENTS_VERSION).strip("_") or "latest"
    target = _cache_root() / f"restate-sdk-clients-{slug}"
    installed = target / "node_modules" / PACKAGE / "package.json"
    if not installed.exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_text('{"name": "durable-proxy-compat", "private": true}\n')
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", f"{PACKAGE}@{CLIENTS_VERSION}"],
                cwd=target, capture_output=True, text=True, timeout=180, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {PACKAGE} timed out (is the registry reachable?)")
        if done.returncode != 0 or not installed.exists():
            pytest.skip(f"npm install {PACKAGE}@{CLIENTS_VERSION} failed (registry unreachable?): {done.stderr[-800:]}")
    return target


@pytest.fixture(scope="module")
def examples_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProc]:
    """One proxy with every example service (examples.all:application) for the module."""
    cluster = Cluster(tmp_path_factory.mktemp("compat"))
    try:
        handler = cluster.handler("examples.all:application")
        yield cluster.proxy([handler], services=EXAMPLES)
    finally:
        cluster.close()
