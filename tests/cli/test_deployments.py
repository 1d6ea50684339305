"""``python -m proxy deployments rm ID|URL [--force]`` against a real proxy and handler."""

from __future__ import annotations

import json

from tests.cli.helpers import Stack, table


def test_rm_refuses_while_pinned_then_forces_and_the_services_go(stack: Stack) -> None:
    proxy = stack.proxy
    (deployment,) = table(stack.cli("deployments", "ls").out)
    dep_id, uri = deployment["ID"], deployment["URI"]
    sleeping = proxy.send("Sleeper/nap", {"seconds": 300, "ledger": False})
    proxy.wait_status(sleeping, "suspended")

    unknown = stack.cli("deployments", "rm", "dp_nope")
    assert unknown.code == 1
    assert unknown.err.strip() == "error: 404 not_found: deployment 'dp_nope' not found"
    not_registered = stack.cli("deployments", "rm", "http://127.0.0.1:1")
    assert not_registered.code == 1 and "no deployment is registered at http://127.0.0.1:1" in not_registered.err

    refused = stack.cli("deployments", "rm", dep_id)
    assert refused.code == 1
    assert refused.err.startswith(f"error: 409 conflict: deployment '{dep_id}' has 1 invocation not completed")
    assert sleeping in refused.err
    assert refused.err.splitlines()[-1] == "hint: add --force to remove it anyway"
    assert [d["ID"] for d in table(stack.cli("deployments", "ls").out)] == [dep_id]

    stack.handler.kill()  # its process is gone: the removal does not need it
    forced = stack.cli("dep", "rm", uri, "--force")
    assert forced.code == 0, forced.err
    lines = forced.out.splitlines()
    assert lines[0] == f"removed {dep_id} at {uri}"
    assert lines[1].startswith("services removed: ") and "Sleeper" in lines[1] and "Counter" in lines[1]
    assert lines[2].startswith("1 invocation not completed were pinned to it")

    assert stack.cli("services", "ls").out.startswith("no services registered")
    assert stack.cli("deployments", "ls").out == "no deployments\n"
    assert proxy.call("Child/work", 1).status_code == 404
    again = stack.cli("deployments", "rm", dep_id, "--json")
    assert again.code == 1 and "404 not_found" in again.err


def test_rm_json_and_register_again(stack: Stack) -> None:
    (deployment,) = table(stack.cli("deployments", "ls").out)
    removed = stack.cli("deployments", "remove", deployment["ID"], "--json")
    assert removed.code == 0, removed.err
    body = json.loads(removed.out)
    assert (body["id"], body["uri"], body["pinned_invocations"], body["moved_services"]) == (
        deployment["ID"], deployment["URI"], [], []
    )  # fmt: skip
    assert "Sleeper" in body["removed_services"]
    added = stack.cli("deployments", "add", deployment["URI"])
    assert added.code == 0, added.err
    assert stack.proxy.call("Child/work", 1).json() == 2
