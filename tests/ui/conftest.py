"""Fixtures of the web page suite: the real-process harness of the end-to-end suite."""

from tests.e2e.plugin import cluster, pytest_runtest_makereport

__all__ = ["cluster", "pytest_runtest_makereport"]
