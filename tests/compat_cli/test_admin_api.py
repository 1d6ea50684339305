"""The parts of Restate's admin API contract the CLI relies on, checked over HTTP (no CLI needed)."""

from __future__ import annotations

import uuid

import pytest

from proxy.api.query import state_version
from tests.compat_cli.conftest import World


def test_version_and_the_versioned_paths(world: World) -> None:
    version = world.admin("GET", "/version").json()
    assert version["min_admin_api_version"] <= 4 <= version["max_admin_api_version"]
    assert version["version"].startswith("1.7.0+durable-proxy.")
    assert version["ingress_endpoint"] == world.proxy.ingress + "/"
    for prefix in ("", "/v1", "/v2", "/v3", "/v4"):
        assert world.admin("GET", f"{prefix}/services/Counter").json()["ty"] == "VirtualObject"
    assert world.admin("GET", "/v9/services").status_code == 404


def test_services_and_deployments_in_restates_shapes(world: World) -> None:
    counter = world.admin("GET", "/services/Counter").json()
    assert {h["name"]: h.get("ty") for h in counter["handlers"]} == {
        "add": "Exclusive",
        "get": "Shared",
        "reset": "Exclusive",
    }
    assert all("input_description" in h and "output_description" in h for h in counter["handlers"])
    greeter = world.admin("GET", "/services/Greeter").json()
    assert greeter["ty"] == "Service" and "ty" not in greeter["handlers"][0]
    dep_id = world.deployment_ids()[world.examples.url]
    assert dep_id.startswith("dp_1") and len(dep_id) == 26
    listed = world.admin("GET", "/deployments").json()["deployments"]
    dep = next(d for d in listed if d["id"] == dep_id)
    assert dep["protocol_type"] == "RequestResponse" and dep["created_at"].endswith("Z")
    assert {"name": "Counter", "revision": 1} in dep["services"]
    detailed = world.admin("GET", f"/deployments/{dep_id}").json()
    assert any(s["name"] == "Counter" and s["ty"] == "VirtualObject" for s in detailed["services"])


def test_register_dry_run_writes_nothing(world: World) -> None:
    greeter = world.cluster.handler("examples.greeter:application", name="greeter-dry-run")
    before = world.deployment_ids()
    dry = world.admin("POST", "/deployments", json={"uri": greeter.url, "dry_run": True, "force": False})
    assert dry.status_code == 201, dry.text
    assert [s["name"] for s in dry.json()["services"]] == ["Greeter"]
    assert world.deployment_ids() == before
    assert world.admin("GET", f"/deployments/{dry.json()['id']}").status_code == 404
    again = world.admin("POST", "/deployments", json={"uri": world.examples.url, "dry_run": True})
    assert again.status_code == 200 and again.json()["id"] == before[world.examples.url]


@pytest.mark.parametrize("mode", ["cancel", "kill", None])
def test_delete_invocation_cancels_or_kills(world: World, mode: str | None) -> None:
    inv_id = world.proxy.send("Review/review", {"title": "delete", "text": "t", "timeout_seconds": 3600})
    world.proxy.wait_status(inv_id, "suspended")
    deleted = world.admin("DELETE", f"/invocations/{inv_id}", params={"mode": mode} if mode else {})
    assert deleted.status_code == 202, deleted.text
    view = world.proxy.wait_status(inv_id, "completed")
    assert view["failure"]["code"] == 409 if mode != "kill" else view["failure"] is not None


def test_delete_invocation_purges(world: World) -> None:
    inv_id = world.proxy.call("Greeter/greet", "Ada").headers["x-restate-id"]
    assert world.admin("DELETE", f"/invocations/{inv_id}", params={"mode": "purge"}).status_code == 202
    assert world.admin("GET", f"/invocations/{inv_id}").status_code == 404
    assert world.admin("DELETE", f"/invocations/{inv_id}", params={"mode": "nope"}).status_code == 400


def test_state_edit_with_bytes_and_version(world: World) -> None:
    key = uuid.uuid4().hex[:8]
    world.proxy.call(f"Counter/{key}/add", 2)
    stale = world.admin(
        "POST", "/services/Counter/state",
        json={"object_key": key, "new_state": {"count": list(b"9")}, "version": state_version({"count": b"3"})},
    )  # fmt: skip
    assert stale.status_code == 409, stale.text
    edit = {"object_key": key, "new_state": {"count": list(b"9")}, "version": state_version({"count": b"2"})}
    assert world.admin("POST", "/services/Counter/state", json=edit).status_code == 202
    assert world.admin("GET", f"/services/Counter/state/{key}").json()["state"] == {"count": 9}
    not_json = {"object_key": key, "new_state": {"count": list(b"\xff")}}
    assert world.admin("POST", "/services/Counter/state", json=not_json).status_code == 400


def test_query_answers_arrow_unless_json_is_asked(world: World) -> None:
    pa = pytest.importorskip("pyarrow")
    answer = world.admin("POST", "/query", json={"query": "select count(*) as n from sys_service"})
    assert answer.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(answer.content).read_all()
    assert table.column("n").type == pa.int64() and table.column("n")[0].as_py() == 6
    bad = world.admin("POST", "/query", headers={"accept": "application/json"}, json={"query": "select nope from"})
    assert bad.status_code == 400 and "message" in bad.json()
    joined = world.admin(
        "POST", "/query", headers={"accept": "application/json"},
        json={"query": "select s.name, dp.id is not null as known from sys_service s "
                       "left join sys_deployment dp on dp.id = s.deployment_id where s.name = 'Counter'"},
    )  # fmt: skip
    assert joined.json() == {"rows": [{"name": "Counter", "known": True}]}
