"""``scripts/concurrent_increments.py`` (the README's 64-concurrent-increments demo) against a real
proxy and the `Counter` example: it reports 64 distinct answers and a count grown by 64, also when
the key had a count already, and says when the proxy cannot be reached."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.harness import REPO, Cluster, free_port

pytestmark = pytest.mark.e2e

SCRIPT = REPO / "scripts" / "concurrent_increments.py"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_script_shows_64_distinct_answers_and_the_final_count(cluster: Cluster) -> None:
    handler = cluster.handler("examples.counter:application")
    proxy = cluster.proxy([handler], services=("Counter",))

    first = _script("--ingress", proxy.ingress)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines() == [
        "64 concurrent Counter/likes/add 1: 64 distinct answers, 1..64",
        "Counter/likes/get: 0 before, 64 after (+64)",
    ]

    again = _script("--ingress", proxy.ingress)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [
        "64 concurrent Counter/likes/add 1: 64 distinct answers, 65..128",
        "Counter/likes/get: 64 before, 128 after (+64)",
    ]
    assert proxy.call("Counter/likes/get").json() == 128

    other = _script("--ingress", proxy.ingress, "--key", "other", "-n", "10")
    assert other.returncode == 0, other.stdout + other.stderr
    assert other.stdout.splitlines()[1] == "Counter/other/get: 0 before, 10 after (+10)"


def test_the_script_says_when_the_proxy_is_not_there() -> None:
    result = _script("--ingress", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "cannot reach the proxy" in result.stderr
