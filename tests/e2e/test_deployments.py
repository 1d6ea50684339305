"""Issue 16 (item 4): the deployment lifecycle against real processes. A deployment with
invocations pinned to it refuses deletion (409) while a new deployment of its service takes the
new invocations; once the pinned ones complete (on the old deployment) it is removed. PATCH moves
a deployment to another port, where its pinned invocation then completes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, ProxyProc, free_port

pytestmark = pytest.mark.e2e

APP = "tests.handlers.scheduled:application"
#: No code schedule: its fires would be pinned to the deployments too.
QUIET = {"TICK_HEARTBEAT": "0"}


def _env(ledger: Path, port: int) -> dict[str, str]:
    """The handler's environment: its ledger, the port it names in it, no code schedule."""
    return {**QUIET, "SCHEDULE_LEDGER": str(ledger), "HANDLER_PORT": str(port)}


def _ports(path: Path) -> dict[str, str]:
    """Invocation id -> the port of the handler that ran it to its end."""
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {line["invocation"]: line["port"] for line in lines if line["handler"] == "hold"}


def _deployment(proxy: ProxyProc, dep_id: str) -> dict[str, Any]:
    response = proxy.http.get(f"{proxy.admin}/deployments/{dep_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def _register(proxy: ProxyProc, uri: str) -> str:
    response = proxy.http.post(proxy.admin + "/deployments", json={"uri": uri})
    assert response.status_code in (200, 201), response.text
    dep_id: str = response.json()["id"]
    return dep_id


def test_a_pinned_deployment_refuses_deletion_then_drains_and_is_removed(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    old_port, new_port = free_port(), free_port()
    old = cluster.handler(APP, env=_env(ledger, old_port), port=old_port)
    new = cluster.handler(APP, env=_env(ledger, new_port), name="new", port=new_port)
    proxy = cluster.proxy([old], services=["Tick"])
    old_id = next(iter(proxy.http.get(proxy.admin + "/deployments").json()["deployments"]))["id"]
    pinned = [proxy.send("Tick/hold", {"seconds": 3}) for _ in range(2)]
    for inv in pinned:
        proxy.wait_status(inv, "suspended")
    view = _deployment(proxy, old_id)
    assert view["pinned"] == {"count": 2, "by_status": {"suspended": 2}, "ids": sorted(pinned)}

    new_id = _register(proxy, new.url)
    assert new_id != old_id
    later = proxy.send("Tick/hold", {"seconds": 0.1})  # new invocations go to the new deployment
    assert proxy.invocation(later)["deployment_id"] == new_id

    refused = proxy.http.delete(f"{proxy.admin}/deployments/{old_id}")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json()["error"] == "conflict" and "2 invocations" in refused.json()["message"]
    assert _deployment(proxy, old_id)["pinned"]["count"] == 2

    for inv in (*pinned, later):
        proxy.wait_status(inv, "completed", timeout=20)
    ports = _ports(ledger)
    assert [ports[inv] for inv in pinned] == [str(old_port)] * 2, "a pinned invocation left its deployment"
    assert ports[later] == str(new_port)
    assert _deployment(proxy, old_id)["pinned"] == {"count": 0, "by_status": {}, "ids": []}

    removed = proxy.http.delete(f"{proxy.admin}/deployments/{old_id}")
    assert removed.status_code == 202, removed.text
    assert removed.json()["removed_services"] == [] and removed.json()["pinned_invocations"] == []
    assert proxy.http.get(f"{proxy.admin}/deployments/{old_id}").status_code == 404
    assert proxy.call("Tick/run", None).status_code == 200  # the service is still served, by the new one


def test_patch_moves_a_deployment_to_a_new_port(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    first_port, second_port = free_port(), free_port()
    first = cluster.handler(APP, env=_env(ledger, first_port), port=first_port)
    proxy = cluster.proxy([first], services=["Tick"])
    dep_id = next(iter(proxy.http.get(proxy.admin + "/deployments").json()["deployments"]))["id"]
    inv = proxy.send("Tick/hold", {"seconds": 2})
    proxy.wait_status(inv, "suspended")

    second = cluster.handler(APP, env=_env(ledger, second_port), name="second", port=second_port)
    other = cluster.handler("tests.handlers.ledger:application", name="other")
    different = proxy.http.patch(f"{proxy.admin}/deployments/{dep_id}", json={"uri": other.url})
    assert different.status_code == 400 and "does not serve what" in different.json()["message"]
    bad = proxy.http.patch(f"{proxy.admin}/deployments/{dep_id}", content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    unknown = proxy.http.patch(f"{proxy.admin}/deployments/dp_nope", json={"uri": second.url})
    assert unknown.status_code == 404

    first.kill()  # the old process is gone: only the new port can finish the pinned invocation
    moved = proxy.http.patch(f"{proxy.admin}/deployments/{dep_id}", json={"uri": second.url})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["id"], moved.json()["uri"]) == (dep_id, second.url)
    assert moved.json()["pinned"]["ids"] == [inv]
    proxy.wait_status(inv, "completed", timeout=20)
    assert _ports(ledger)[inv] == str(second_port)
    assert proxy.invocation(inv)["deployment_id"] == dep_id
    # The move is durable: after a restart the deployment is still served from the new port.
    proxy.restart(services=["Tick"])
    assert _deployment(proxy, dep_id)["uri"] == second.url
    assert proxy.call("Tick/run", None).status_code == 200
