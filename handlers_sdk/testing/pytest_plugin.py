"""pytest fixtures of the handler toolkit.

Installing the package registers this module as a pytest plugin (the ``pytest11`` entry point
``handlers_sdk`` in ``pyproject.toml``), so the fixtures are there with nothing to enable. Without
the entry point (e.g. the sources on ``sys.path`` only), enable it with
``pytest -p handlers_sdk.testing.pytest_plugin``, with
``pytest_plugins = ["handlers_sdk.testing.pytest_plugin"]`` in the root ``conftest.py``, or by
importing the fixtures into any conftest::

    from handlers_sdk.testing.pytest_plugin import local_runtime, replay_safety  # noqa: F401

Then::

    def test_order_saga_is_replay_safe(replay_safety):
        replay_safety(orders, "process", Order("o1", "sku-1", 2, 99.0))

This is the only module of the toolkit that imports pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from handlers_sdk.service import Service
from handlers_sdk.testing.crash import ReplaySafetyReport, check_replay_safety
from handlers_sdk.testing.runtime import LocalRuntime

__all__ = ["local_runtime", "replay_safety"]

ReplaySafetyCheck = Callable[..., ReplaySafetyReport]
RuntimeFactory = Callable[..., LocalRuntime]


@pytest.fixture
def replay_safety() -> ReplaySafetyCheck:
    """`check_replay_safety`: ``replay_safety(service, handler, input, **options)`` fails the test
    (a ReplaySafetyError, which is an AssertionError) at the first crash position that breaks a
    rule. For sync tests; async tests await `check_replay_safety_async` instead."""
    return check_replay_safety


@pytest.fixture
def local_runtime() -> RuntimeFactory:
    """A factory of `LocalRuntime`: ``rt = local_runtime([orders], mode="ack")``."""

    def factory(services: Iterable[Service] | Service, **options: Any) -> LocalRuntime:
        return LocalRuntime(services, **options)

    return factory
