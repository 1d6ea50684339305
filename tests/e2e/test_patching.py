"""A code change shipped behind ``ctx.patched`` while an invocation of the old code sleeps: the
handler is restarted with the new code, the sleeping invocation takes the old branch when it
wakes (its journal replays cleanly, no 570) and a new invocation takes the new one."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.e2e

APP = "tests.handlers.patching:application"


def test_a_patched_handler_replaces_the_old_one_under_an_invocation_in_flight(cluster: Cluster) -> None:
    handler = cluster.handler(APP, env={"DURABLE_PATCH_VERSION": "1"})
    proxy = cluster.proxy([handler], services=("Shipping",))
    old = proxy.send("Shipping/ship", "o-1")
    view = proxy.wait_status(old, "suspended", timeout=10)
    assert [item["entry"]["type"] for item in view["journal"]] == ["run", "sleep"]

    handler.kill()  # redeploy: the same service, the patched code
    handler.start(env={"DURABLE_PATCH_VERSION": "2"})
    handler.wait_ready()
    new = proxy.send("Shipping/ship", "o-2")

    done_old = proxy.wait_status(old, "completed", timeout=20)
    done_new = proxy.wait_status(new, "completed", timeout=20)
    assert done_old["result"] == "o-1 shipped with label-o-1 by v2"
    assert done_new["result"] == "o-2 shipped with insured-label-o-2 by v2"
    assert [item["entry"]["type"] for item in done_old["journal"]] == ["run", "sleep", "run"]
    assert done_new["journal"][0]["entry"] == {"type": "patch", "name": "insured"}
    assert [item["entry"].get("name") for item in done_new["journal"]] == ["insured", "insured-label", None, "dispatch"]
    assert done_new["retry_count"] == 0
