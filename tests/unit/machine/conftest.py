"""Fixtures of the state machine's unit tests: a fresh `World` (memory store, machine, fixed clock)."""

from __future__ import annotations

import pytest

from tests.unit.machine.world import World


@pytest.fixture
def world() -> World:
    """A machine over an empty memory store, with the services of `world.SERVICES`."""
    return World()
