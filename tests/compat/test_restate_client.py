"""Restate's TypeScript ingress client (`@restatedev/restate-sdk-clients` from npm) against a real
proxy running the examples: every case of driver.mjs, one test each.

The driver runs all of its cases at once in one node process (each with its own keys), so the
module costs one proxy, one handler service and one node start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ProxyProc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DRIVER = Path(__file__).with_name("driver.mjs")

WORKFLOW_KEYS = ["a/b", "with space", "what?", "ünï©ødé ☃", "50%", "x+y&z=1#h"]

CASES = [
    "service call",
    "object calls and a shared read",
    "idempotent call",
    "idempotent attach by target of an object with a key holding a slash",
    "send with an idempotency key and result()",
    "delayed send",
    *(f"workflow submit, attach and output with key {json.dumps(key, ensure_ascii=False)}" for key in WORKFLOW_KEYS),
    "workflow submit with a delay",
    "awakeable resolve, then resolve and reject again",
    "awakeable reject",
    "awakeable unknown but well formed, and malformed",
    "terminal errors keep their codes",
    "v1.7 call, send, attach and output paths",
    "GET invokes a handler without input, and health",
    "ingress errors as Restate answers them",
    "CORS: preflight, and the client from another origin",
]


@pytest.fixture(scope="module")
def report(clients_dir: Path, examples_proxy: ProxyProc) -> dict[str, Any]:
    """The driver's results: ``{"client": version, "cases": {name: {"ok", "error", "ms"}}}``."""
    node = shutil.which("node")
    assert node is not None  # clients_dir skipped otherwise
    argv = [node, str(DRIVER), str(clients_dir), examples_proxy.ingress, examples_proxy.admin]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["proxy_log"] = examples_proxy.log_tail(4000)
    return result


def test_the_driver_ran_every_case(report: dict[str, Any]) -> None:
    assert sorted(report["cases"]) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_restate_client(report: dict[str, Any], case: str) -> None:
    outcome = report["cases"].get(case)
    assert outcome is not None, f"the driver did not run {case!r}"
    assert outcome["ok"], (
        f"{case} (client {report['client']}):\n{outcome['error']}\n---- proxy log ----\n{report['proxy_log']}"
    )
