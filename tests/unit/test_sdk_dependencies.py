"""The SDK must not need the proxy's dependencies (the README: a handler service installs only
msgspec, httpx and cryptography)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = {"lmdb", "starlette", "uvicorn", "aiohttp", "uvloop", "httptools", "proxy"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("the SDK imported " + name)
            return None

    sys.meta_path.insert(0, Block())
    import handlers_sdk
    import handlers_sdk.__main__
    import handlers_sdk.testing
    import examples.all
    print("ok")
    """
)


def test_sdk_and_examples_import_without_the_proxy_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
