"""`Machine.remove_deployment`: the rule behind ``DELETE /deployments/{id}``."""

from __future__ import annotations

import msgspec
import pytest

from durable_core.errors import Conflict, NotFound
from durable_core.machine import DeploymentRemoval
from durable_core.records import DeploymentRecord, ServiceRecord
from handlers_sdk.protocol import Completed
from tests.unit.machine.world import NOW, SERVICES, World


def _register(world: World, dep_id: str, services: list[ServiceRecord], created_ms: int = NOW) -> DeploymentRecord:
    deployment = DeploymentRecord(
        id=dep_id, uri=f"http://{dep_id}", services=[s.name for s in services], created_ms=created_ms
    )
    world.write(lambda txn: world.machine.register(txn, deployment, services))
    return deployment


def _remove(world: World, dep_id: str, force: bool = False) -> DeploymentRemoval:
    return world.write(lambda txn: world.machine.remove_deployment(txn, dep_id, force=force))


def _stored(world: World) -> tuple[list[str], dict[str, str]]:
    """Stored deployment ids, and service name -> deployment id."""
    deployments = [d.id for d in world.read(world.machine.deployments)]
    services = {s.name: s.deployment_id for s in world.read(world.machine.services)}
    return deployments, services


@pytest.fixture
def registered(world: World) -> World:
    """dp_a serves Greeter and Counter, dp_b serves Signup (as `world.SERVICES` routes them)."""
    _register(world, "dp_a", [SERVICES["Greeter"], SERVICES["Counter"]])
    _register(world, "dp_b", [SERVICES["Signup"]])
    return world


@pytest.mark.parametrize("dep_id", ["dp_nope", "", "dp_" + "x" * 600, "dp_ü"])
def test_an_unknown_deployment_is_not_found(registered: World, dep_id: str) -> None:
    with pytest.raises(NotFound, match="not found"):
        _remove(registered, dep_id)
    assert _stored(registered) == (["dp_a", "dp_b"], {"Counter": "dp_a", "Greeter": "dp_a", "Signup": "dp_b"})


def test_removing_a_deployment_removes_the_services_only_it_serves(registered: World) -> None:
    removal = _remove(registered, "dp_a")
    assert removal.deployment.id == "dp_a" and removal.deployment.uri == "http://dp_a"
    assert sorted(removal.removed_services) == ["Counter", "Greeter"]
    assert removal.moved_services == [] and removal.pinned == []
    assert _stored(registered) == (["dp_b"], {"Signup": "dp_b"})
    with pytest.raises(NotFound):  # once
        _remove(registered, "dp_a")


def test_a_service_another_deployment_serves_moves_to_the_latest_of_them(world: World) -> None:
    """Greeter is announced by three deployments; removing the one serving it routes it to the
    most recently registered of the others. Removing one that no longer serves it (its record
    points elsewhere) leaves it alone."""
    greeter = SERVICES["Greeter"]
    _register(world, "dp_old", [msgspec.structs.replace(greeter, deployment_id="dp_old")], created_ms=NOW)
    _register(world, "dp_mid", [msgspec.structs.replace(greeter, deployment_id="dp_mid")], created_ms=NOW + 1)
    alone = ServiceRecord(name="Alone", handlers={"x": ""}, deployment_id="dp_new")
    _register(world, "dp_new", [msgspec.structs.replace(greeter, deployment_id="dp_new"), alone], created_ms=NOW + 2)
    assert _stored(world)[1] == {"Alone": "dp_new", "Greeter": "dp_new"}

    removal = _remove(world, "dp_new")
    assert removal.removed_services == ["Alone"]
    assert removal.moved_services == [msgspec.structs.replace(greeter, deployment_id="dp_mid")]
    assert _stored(world) == (["dp_mid", "dp_old"], {"Greeter": "dp_mid"})

    untouched = _remove(world, "dp_old")
    assert (untouched.removed_services, untouched.moved_services) == ([], [])
    assert _stored(world) == (["dp_mid"], {"Greeter": "dp_mid"})


def test_invocations_in_flight_pinned_to_it_refuse_the_removal(registered: World) -> None:
    """A running, suspended or paused invocation pinned to the deployment makes the removal a
    Conflict (naming it) that changes nothing; completed ones and those pinned elsewhere do not."""
    world = registered
    done = world.start()
    world.settle(done, Completed())
    world.start("Signup", "run", "alice")  # pinned to dp_b
    running = world.start()  # Greeter: pinned to dp_a
    assert running.deployment_id == "dp_a"
    paused = world.with_status("paused")
    with pytest.raises(Conflict, match=r"has 2 invocations not completed pinned to it") as refused:
        _remove(world, "dp_a")
    assert running.id in refused.value.message and paused.id in refused.value.message
    assert "force" in refused.value.message
    assert _stored(world)[0] == ["dp_a", "dp_b"]

    forced = _remove(world, "dp_a", force=True)
    assert sorted(forced.pinned) == sorted([running.id, paused.id])
    assert _stored(world) == (["dp_b"], {"Signup": "dp_b"})
    assert world.record(running.id).status == "running"  # the invocations themselves are left as they are


def test_once_they_complete_the_removal_goes_through(registered: World) -> None:
    world = registered
    running = world.start()
    with pytest.raises(Conflict, match="has 1 invocation not completed"):
        _remove(world, "dp_a")
    world.settle(running, Completed())
    assert _remove(world, "dp_a").pinned == []
