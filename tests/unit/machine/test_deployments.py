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


def _pinned(world: World, dep_id: str) -> dict[str, str]:
    """Invocation id -> status of what the index says is pinned to `dep_id`."""
    return {r.id: r.status for r in world.read(lambda txn: world.machine.pinned(txn, dep_id))}


def test_the_pinned_index_follows_creation_completion_and_moves(registered: World) -> None:
    """Every invocation not completed has a row under its deployment from the transaction that
    creates it; completion removes it, a resume on another deployment moves it, purging leaves none."""
    world = registered
    running = world.start()
    scheduled = world.start(delay_ms=10_000)
    signup = world.start("Signup", "run", "alice")
    assert _pinned(world, "dp_a") == {running.id: "running", scheduled.id: "scheduled"}
    assert _pinned(world, "dp_b") == {signup.id: "running"}
    world.settle(running, Completed())
    assert _pinned(world, "dp_a") == {scheduled.id: "scheduled"}
    paused = world.with_status("paused")
    world.act("resume", paused.id, deployment_id="dp_b")
    assert _pinned(world, "dp_b") == {signup.id: "running", paused.id: "running"}
    assert paused.id not in _pinned(world, "dp_a")
    world.act("kill", scheduled.id)
    world.act("purge", scheduled.id)
    assert _pinned(world, "dp_a") == {}
    assert [k for k in world.keys("pinned") if k.startswith(b"dp_a\x00")] == []


def test_a_store_with_nothing_active_needs_no_index_built(registered: World) -> None:
    """A start checks by a read and commits nothing when there is nothing active to index."""
    assert not registered.read(registered.machine.pinned_index_missing)


def test_removal_reads_only_the_pinned_index(registered: World) -> None:
    """The refusal counts from the index: an invocation stored without its row (a store older than
    the index) is not seen until `index_pinned` indexes it, once."""
    world = registered
    record = world.start()
    world.write(lambda txn: txn.delete("pinned", b"dp_a\x00" + record.id.encode()))
    assert _pinned(world, "dp_a") == {}
    assert world.read(world.machine.pinned_index_missing)
    assert world.write(world.machine.index_pinned) >= 1
    assert _pinned(world, "dp_a") == {record.id: "running"}
    assert not world.read(world.machine.pinned_index_missing)
    assert world.write(world.machine.index_pinned) == 0
    with pytest.raises(Conflict, match="has 1 invocation not completed"):
        _remove(world, "dp_a")


def test_moving_a_deployment_keeps_its_id_services_and_pins(registered: World) -> None:
    world = registered
    record = world.start()
    moved = world.write(lambda txn: world.machine.move_deployment(txn, "dp_a", "http://elsewhere:9"))
    assert (moved.id, moved.uri, moved.services) == ("dp_a", "http://elsewhere:9", ["Greeter", "Counter"])
    assert [d.uri for d in world.read(world.machine.deployments)] == ["http://elsewhere:9", "http://dp_b"]
    assert _pinned(world, "dp_a") == {record.id: "running"}
    with pytest.raises(Conflict, match="'dp_b' is registered at http://dp_b already"):
        world.write(lambda txn: world.machine.move_deployment(txn, "dp_a", "http://dp_b"))
    with pytest.raises(NotFound, match="deployment 'dp_nope' not found"):
        world.write(lambda txn: world.machine.move_deployment(txn, "dp_nope", "http://x"))


def test_a_new_deployment_takes_new_invocations_while_old_ones_stay_pinned(registered: World) -> None:
    """Registering another deployment for Greeter routes new invocations to it; the one in flight
    keeps its deployment (its journal was written by that code)."""
    world = registered
    old = world.start()
    greeter = msgspec.structs.replace(SERVICES["Greeter"], deployment_id="dp_v2")
    _register(world, "dp_v2", [greeter], created_ms=NOW + 1)
    world.services["Greeter"] = greeter  # the proxy's routing table follows the registration
    new = world.start()
    assert (world.record(old.id).deployment_id, new.deployment_id) == ("dp_a", "dp_v2")
    assert _pinned(world, "dp_a") == {old.id: "running"} and _pinned(world, "dp_v2") == {new.id: "running"}
    world.settle(world.record(old.id), Completed())
    assert _remove(world, "dp_a").pinned == []
