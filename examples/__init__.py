"""Example handler services."""
