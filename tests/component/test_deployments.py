"""``DELETE /deployments/{id}[?force=true]``: removes a deployment and the services only it serves."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from handlers_sdk import Context, Service
from proxy.store.lmdb import Store
from tests.component.harness import HANDLER_URL, Harness, StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

OTHER_URL = "http://other.test"


def napper() -> Service:
    svc = Service("Napper")

    @svc.handler()
    async def nap(ctx: Context, seconds: float) -> str:
        await ctx.sleep(timedelta(seconds=seconds))
        return "awake"

    @svc.handler()
    async def quick(ctx: Context) -> str:
        return "done"

    return svc


async def _deployment_id(h: Harness, uri: str = HANDLER_URL) -> str:
    listed = (await h.admin.get("/deployments")).json()["deployments"]
    found = [str(d["id"]) for d in listed if d["uri"] == uri]
    assert found, listed
    return found[0]


async def test_delete_refuses_while_invocations_are_pinned_unless_forced(start: StartHarness) -> None:
    h = await start([napper()])
    dep_id = await _deployment_id(h)
    quick = await h.ingress.post("/Napper/quick")
    assert quick.status_code == 200, quick.text  # completed: pins nothing
    sleeping = await h.send("/Napper/nap", 3600)
    assert (await h.wait_status(sleeping, "suspended"))["deployment_id"] == dep_id

    refused = await h.admin.delete(f"/deployments/{dep_id}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "conflict"
    assert sleeping in refused.json()["message"] and "force=true" in refused.json()["message"]
    assert (await h.admin.get(f"/deployments/{dep_id}")).status_code == 200
    assert (await h.admin.delete(f"/deployments/{dep_id}?force=maybe")).status_code == 400

    forced = await h.admin.delete(f"/deployments/{dep_id}", params={"force": "true"})
    assert forced.status_code == 202, forced.text
    body = forced.json()
    assert (body["id"], body["uri"]) == (dep_id, HANDLER_URL)
    assert body["removed_services"] == ["Napper"]
    assert body["moved_services"] == []
    assert body["pinned_invocations"] == [sleeping]

    assert (await h.admin.get(f"/deployments/{dep_id}")).status_code == 404
    assert (await h.admin.get("/deployments")).json() == {"deployments": []}
    assert (await h.admin.get("/services")).json() == {"services": []}
    assert (await h.ingress.post("/Napper/quick")).status_code == 404
    again = await h.admin.delete(f"/deployments/{dep_id}")
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    assert (await h.inspect(sleeping))["status"] == "suspended"  # left as it was


async def test_delete_without_invocations_is_durable(start: StartHarness) -> None:
    """Nothing pinned: removed at once, and from the store (not only from the routing table)."""
    h = await start([napper()])
    dep_id = await _deployment_id(h)
    assert (await h.admin.delete("/deployments/dp_unknown")).status_code == 404
    assert (await h.admin.delete(f"/deployments/{dep_id}")).status_code == 202
    await h.stop()
    store = Store(h.settings.data_dir, h.settings.map_size)
    store.open()
    try:
        with store.read() as txn:
            assert (h.apps.runtime.machine.deployments(txn), h.apps.runtime.machine.services(txn)) == ([], [])
    finally:
        store.close()


async def test_a_service_another_deployment_serves_moves_there(start: StartHarness) -> None:
    """Two deployments announce Napper; removing the one serving it routes its calls to the other."""
    h = await start([napper()])
    first = await _deployment_id(h)

    discovery = h.router.route(host="other.test", path="/discovery").mock(
        return_value=httpx.Response(200, content=h.handler._manifest, headers={"content-type": "application/json"})
    )
    registered = await h.admin.post("/deployments", json={"uri": OTHER_URL})
    assert registered.status_code == 201, registered.text
    assert discovery.called
    second = registered.json()["id"]
    assert {s["name"]: s["deployment_id"] for s in (await h.admin.get("/services")).json()["services"]} == {
        "Napper": second
    }

    removed = await h.admin.delete(f"/deployments/{second}")
    assert removed.status_code == 202, removed.text
    assert removed.json()["removed_services"] == []
    assert [s["deployment_id"] for s in removed.json()["moved_services"]] == [first]
    assert [d["id"] for d in (await h.admin.get("/deployments")).json()["deployments"]] == [first]
    answer = await h.ingress.post("/Napper/quick")
    assert (answer.status_code, json.loads(answer.content)) == (200, "done")
    assert h.sent[-1].url.startswith(HANDLER_URL + "/invoke/Napper/quick")
