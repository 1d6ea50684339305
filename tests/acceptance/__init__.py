"""Acceptance tests: the RELIABILITY.md §3 failure matrix against real processes."""
