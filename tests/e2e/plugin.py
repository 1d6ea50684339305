"""Fixtures and hooks shared by the e2e and acceptance suites (imported by both conftests)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster

__all__ = ["cluster", "pytest_runtest_makereport"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, attach process logs, unfinished invocations and the seed to the report."""
    report = yield
    cluster: Cluster | None = getattr(item, "_cluster", None)
    if report.failed and cluster is not None:
        try:
            report.sections.append(("processes", cluster.report()))
        except Exception as exc:  # noqa: BLE001 - the report must not hide the failure
            report.sections.append(("processes", f"cannot build the report: {exc!r}"))
    return report


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Processes of one test: started through this object, all SIGKILLed and reaped at teardown."""
    c = Cluster(tmp_path)
    request.node._cluster = c
    print(f"cluster seed {c.seed}, artifacts in {tmp_path}")
    try:
        yield c
    finally:
        c.close()
