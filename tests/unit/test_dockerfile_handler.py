"""examples/Dockerfile.handler (the handler-service image of docs/container.md) passes hadolint,
keeps the contract the docs describe, and its build context lets in everything it copies."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.unit.test_dockerfile import assert_hadolint_clean

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "examples" / "Dockerfile.handler"
IGNORE = ROOT / "examples" / "Dockerfile.handler.dockerignore"


def test_handler_dockerfile_is_hadolint_clean() -> None:
    assert_hadolint_clean(DOCKERFILE)


def test_handler_dockerfile_keeps_its_contract() -> None:
    """SDK only (no [proxy] extra), uvicorn on 0.0.0.0:9080, the app as CMD, health, not root."""
    text = DOCKERFILE.read_text()
    for expected in (
        "ARG BASE_IMAGE=python:3.11-slim",
        'pip install --no-cache-dir . "uvicorn',
        "COPY examples ./examples",
        "EXPOSE 9080",
        "HEALTHCHECK",
        "/health",
        '"--host", "0.0.0.0", "--port", "9080"',
        'CMD ["examples.all:application"]',
    ):
        assert expected in text, expected
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "[proxy]" not in instructions
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1].split(":")[0] not in ("root", "0")


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins (``!`` re-includes); a directory covers its files."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern[1:] if negated else pattern
        glob = glob.rstrip("/")
        if fnmatch.fnmatch(path, glob) or (path.startswith(glob + "/") and glob != "*"):
            included = negated
    return included


def test_the_build_context_lets_in_what_the_handler_dockerfile_copies() -> None:
    """The root .dockerignore is an allow-list for the proxy's image; the handler's own ignore file
    (read instead of it for this Dockerfile) must let in every COPY source, and leave caches out."""
    patterns = [line.strip() for line in IGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    sources = [
        source
        for line in DOCKERFILE.read_text().splitlines()
        if (match := re.match(r"^COPY\s+(.+)$", line))
        for source in match.group(1).split()[:-1]
        if not source.startswith("--")
    ]
    assert sources, "no COPY lines found"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert _included(source, patterns), source
        if (ROOT / source).is_dir():
            for file in sorted((ROOT / source).rglob("*.py"))[:50]:
                assert _included(str(file.relative_to(ROOT)), patterns), file
    assert not _included("tests/unit/test_dockerfile.py", patterns)
    assert not _included("data/data.mdb", patterns)
