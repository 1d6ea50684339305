"""Restate's CLI (``restate``) against the proxy's admin API, with the examples registered.

Each test makes its own invocations (its own targets or keys), so the order does not matter.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from handlers_sdk.ids import restate_awakeable_id
from handlers_sdk.protocol import child_invocation_id
from tests.compat_cli.conftest import Restate, World


def _key() -> str:
    return uuid.uuid4().hex[:10]


def _suspended_review(world: World, title: str) -> str:
    inv_id = world.proxy.send("Review/review", {"title": title, "text": "t", "timeout_seconds": 3600})
    world.proxy.wait_status(inv_id, "suspended")
    return inv_id


def test_whoami_checks_the_admin_api_version(restate: Restate) -> None:
    result = restate("whoami")
    assert result.code == 0, result
    assert "is healthy" in result.out, result
    assert "Could not verify the admin API version" not in result.out + result.err, result


def test_services_list_and_describe(restate: Restate, world: World) -> None:
    listed = restate("services", "list")
    assert listed.code == 0, listed
    for name in ("Counter", "Greeter", "Signup", "Review"):
        assert name in listed.out, listed
    described = restate("services", "describe", "Counter")
    assert described.code == 0, described
    assert "VirtualObject" in described.out and world.deployment_ids()[world.examples.url] in described.out
    for handler in ("add", "get", "reset"):
        assert f" {handler} " in described.out, described


def test_deployments_list_and_describe(restate: Restate, world: World) -> None:
    dep_id = world.deployment_ids()[world.examples.url]
    listed = restate("deployments", "list")
    assert listed.code == 0, listed
    assert dep_id in listed.out and world.examples.url in listed.out, listed
    described = restate("deployments", "describe", dep_id)
    assert described.code == 0, described
    assert "Counter" in described.out and "Signup" in described.out, described


def test_deployments_register_dry_run_changes_nothing_then_registers(restate: Restate, world: World) -> None:
    greeter = world.cluster.handler("examples.greeter:application", name="greeter-register")
    before = world.deployment_ids()
    services_before = world.admin("GET", "/services/Greeter").json()
    # Without --yes (stdin is not a terminal) the CLI shows its dry run, then stops at the prompt.
    dry = restate("deployments", "register", greeter.url)
    assert dry.code != 0 and "Greeter" in dry.out, dry
    assert world.deployment_ids() == before
    assert world.admin("GET", "/services/Greeter").json() == services_before

    registered = restate("deployments", "register", "--yes", greeter.url)
    assert registered.code == 0, registered
    ids = world.deployment_ids()
    assert greeter.url in ids and ids[greeter.url] in registered.out, registered
    assert world.admin("GET", "/services/Greeter").json()["deployment_id"] == ids[greeter.url]

    forced = restate("deployments", "register", "--yes", "--force", greeter.url)
    assert forced.code == 0, forced
    assert world.deployment_ids() == ids  # updated in place: same id


def test_invocations_list(restate: Restate, world: World) -> None:
    key = _key()
    world.proxy.call(f"Counter/{key}/add", 1)
    result = restate("invocations", "list", "--all", "--limit", "500")
    assert result.code == 0, result
    assert f"Counter/{key}/add" in result.out, result


def test_invocations_list_with_filters(restate: Restate, world: World) -> None:
    """With filters the CLI's count query reads a subquery's alias from outside it (DataFusion's
    scoping; `proxy.api.query.lift_subquery_aliases`)."""
    key = _key()
    inv_id = world.proxy.call(f"Counter/{key}/add", 1).headers["x-restate-id"]
    greeted = world.proxy.call("Greeter/greet", "Ada").headers["x-restate-id"]
    by_service = restate("invocations", "list", "--all", "--limit", "500", "--service", "Greeter")
    assert by_service.code == 0, by_service
    assert greeted in by_service.out and "Counter/" not in by_service.out, by_service
    by_key = restate("invocations", "list", "--all", "--service", "Counter", "--handler", "add", "--key", key)
    assert by_key.code == 0, by_key
    assert inv_id in by_key.out and "Greeter/" not in by_key.out, by_key


def test_invocations_describe(restate: Restate, world: World) -> None:
    inv_id = _suspended_review(world, "describe")
    result = restate("invocations", "describe", inv_id)
    assert result.code == 0, result
    assert "Review/review" in result.out and "suspended" in result.out, result
    # The journal, read from sys_journal, with the id of the child the call started.
    child = child_invocation_id(inv_id, 0)  # entry 0 of the review is its call of the summarizer
    assert "Call Summarizer/summarize" in result.out and child in result.out, result
    described = restate("invocations", "describe", child)
    assert described.code == 0 and "Summarizer/summarize" in described.out, described


def test_the_awakeable_id_describe_shows_resolves_the_awakeable(restate: Restate, world: World) -> None:
    """The CLI prints an awakeable as ``prom_1...``, computed from the invocation id and the
    entry's index; the ingress takes that id for the same awakeable."""
    inv_id = _suspended_review(world, "prom")
    result = restate("invocations", "describe", inv_id)
    assert result.code == 0, result
    shown = re.findall(r"prom_1[A-Za-z0-9_-]+", result.out)
    assert shown == [restate_awakeable_id(inv_id, 1)], result  # entry 1: the call is entry 0
    resolved = world.proxy.http.post(
        f"{world.proxy.ingress}/restate/awakeables/{shown[0]}/resolve", json={"decision": "approved"}
    )
    assert resolved.status_code == 202, resolved.text
    world.proxy.wait_status(inv_id, "completed")
    assert world.proxy.output(inv_id).json()["outcome"] == "approved"


def test_invocations_cancel_by_target(restate: Restate, world: World) -> None:
    ids = [_suspended_review(world, "cancel-1"), _suspended_review(world, "cancel-2")]
    result = restate("invocations", "cancel", "--yes", "Review/review")
    assert result.code == 0, result
    for inv_id in ids:
        view = world.proxy.wait_status(inv_id, "completed")
        assert view["failure"]["code"] == 409, view  # cancelled: a TerminalError raised in the handler


def test_invocations_cancel_kill_and_purge_by_id(restate: Restate, world: World) -> None:
    cancelled, killed = _suspended_review(world, "cancel-by-id"), _suspended_review(world, "kill-by-id")
    try:
        result = restate("invocations", "cancel", "--yes", cancelled)
        assert result.code == 0, result
        assert world.proxy.wait_status(cancelled, "completed")["failure"]["code"] == 409
        result = restate("invocations", "kill", "--yes", killed)
        assert result.code == 0, result
        assert world.proxy.wait_status(killed, "completed")["status"] == "completed"
        result = restate("invocations", "purge", "--yes", cancelled)
        assert result.code == 0, result
        assert world.admin("GET", f"/invocations/{cancelled}").status_code == 404
    finally:
        for inv_id in (cancelled, killed):
            world.admin("PATCH", f"/invocations/{inv_id}/kill")


def test_invocations_kill_by_target(restate: Restate, world: World) -> None:
    key = _key()
    inv_id = world.proxy.send(f"Signup/{key}/run", "ada@example.com")
    world.proxy.wait_status(inv_id, "suspended")
    result = restate("invocations", "kill", "--yes", f"Signup/{key}/run")
    assert result.code == 0, result
    assert world.proxy.wait_status(inv_id, "completed")["status"] == "completed"


def test_invocations_purge_by_target(restate: Restate, world: World) -> None:
    key = _key()
    inv_id = world.proxy.call(f"Counter/{key}/add", 5).headers["x-restate-id"]
    result = restate("invocations", "purge", "--yes", f"Counter/{key}/add")
    assert result.code == 0, result
    assert world.admin("GET", f"/invocations/{inv_id}").status_code == 404


def test_state_get_and_edit(restate: Restate, world: World, tmp_path: Path) -> None:
    key = _key()
    world.proxy.call(f"Counter/{key}/add", 2)
    got = restate("state", "get", "Counter", key)
    assert got.code == 0, got
    assert "count" in got.out and " 2 " in got.out, got

    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\npath = sys.argv[1]\nstate = json.load(open(path))\nstate['count'] = 40\n"
        "json.dump(state, open(path, 'w'))\n"
    )
    editor.chmod(0o755)
    script = tmp_path / "editor.sh"
    script.write_text(f'#!/bin/sh\nexec "{world.proxy.argv[0]}" "{editor}" "$1"\n')
    script.chmod(0o755)
    edited = restate("state", "edit", "--yes", "Counter", key, env={"RESTATE_EDITOR": str(script)})
    assert edited.code == 0, edited
    assert world.admin("GET", f"/services/Counter/state/{key}").json()["state"] == {"count": 40}
    assert world.proxy.call(f"Counter/{key}/add", 1).json() == 41


def test_state_of_a_key_whose_invocations_were_all_purged(restate: Restate, world: World) -> None:
    """A key's state belongs to the key: once every invocation of it is purged, ``select * from
    state`` and ``restate state get`` still show it."""
    key = _key()
    ids = [world.proxy.call(f"Counter/{key}/add", n).headers["x-restate-id"] for n in (2, 3)]
    for inv_id in ids:
        assert world.admin("PATCH", f"/invocations/{inv_id}/purge").status_code == 200
        assert world.admin("GET", f"/invocations/{inv_id}").status_code == 404
    answer = world.admin(
        "POST", "/query", headers={"accept": "application/json"},
        json={"query": f"select * from state where service_name = 'Counter' and service_key = '{key}'"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    assert [(r["service_name"], r["service_key"], r["key"], r["value_utf8"]) for r in rows] == [
        ("Counter", key, "count", "5")
    ], rows
    got = restate("state", "get", "Counter", key)
    assert got.code == 0 and "count" in got.out and " 5 " in got.out, got


def test_sql(restate: Restate, world: World) -> None:
    key = _key()
    world.proxy.call(f"Counter/{key}/add", 3)
    result = restate("sql", f"select target, status from sys_invocation where target_service_key = '{key}'")
    assert result.code == 0, result
    assert f"Counter/{key}/add" in result.out and "completed" in result.out, result
    counted = restate("sql", "select count(*) as n from sys_deployment")
    assert counted.code == 0, counted


def test_sql_json_over_the_admin_api(world: World) -> None:
    key = _key()
    world.proxy.call(f"Counter/{key}/add", 7)
    answer = world.admin(
        "POST", "/v4/query", headers={"accept": "application/json"},
        json={"query": f"select key, value from state where service_name = 'Counter' and service_key = '{key}'"},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
    assert answer.json() == {"rows": [{"key": "count", "value": json.dumps(7).encode().hex()}]}
