"""Fixtures of the CLI tests: real processes (see `tests.e2e.harness`) and a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Stack
from tests.e2e.harness import Cluster
from tests.e2e.plugin import cluster, pytest_runtest_makereport

__all__ = ["cluster", "pytest_runtest_makereport", "stack"]


@pytest.fixture
def stack(cluster: Cluster, tmp_path: Path) -> Iterator[Stack]:
    """A proxy with ``tests.handlers.durable:application`` registered, and a CLI pointed at it."""
    handler = cluster.handler("tests.handlers.durable:application")
    proxy = cluster.proxy([handler], services=("Sleeper", "Child", "Approver"))
    yield Stack(proxy, handler)
