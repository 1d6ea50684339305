"""Fixtures of the end-to-end suite: see `tests.e2e.plugin` and `tests.e2e.harness`."""

from tests.e2e.plugin import cluster, pytest_runtest_makereport

__all__ = ["cluster", "pytest_runtest_makereport"]
