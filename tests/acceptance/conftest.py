"""Fixtures of the acceptance suite: the same harness as the end-to-end suite."""

from tests.e2e.plugin import cluster, pytest_runtest_makereport

__all__ = ["cluster", "pytest_runtest_makereport"]
