"""Fixtures of the handler toolkit tests: the plugin's fixtures, and anyio on asyncio."""

from __future__ import annotations

import pytest

from handlers_sdk.testing.pytest_plugin import local_runtime, replay_safety

__all__ = ["anyio_backend", "local_runtime", "replay_safety"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
