"""``python -m proxy schedules ...`` and ``deployments show|update`` against a real proxy and the
schedule handlers (`tests.handlers.scheduled`)."""

from __future__ import annotations

import json

from tests.cli.helpers import Stack, cli, table
from tests.e2e.harness import Cluster

#: No code schedule: its fires would be pinned to the deployment too.
QUIET = {"TICK_HEARTBEAT": "0"}


def _stack(cluster: Cluster, env: dict[str, str] | None = None) -> Stack:
    handler = cluster.handler("tests.handlers.scheduled:application", env=env)
    proxy = cluster.proxy([handler], services=["Tick"])
    return Stack(proxy, handler)


def test_schedules_create_list_show_pause_resume_delete(cluster: Cluster) -> None:
    stack = _stack(cluster)
    policies = ("--overlap", "queue", "--catch-up", "once")
    created = stack.cli("schedules", "create", "Tick/run", "--cron", "0 3 * * *", "--timezone", "Europe/Berlin",
                        "--input", '{"n": 1}', *policies, "--id", "nightly")  # fmt: skip
    assert created.code == 0, created.err
    assert created.out.startswith("created nightly: Tick/run 0 3 * * * (Europe/Berlin), next fire 20")
    rows = {row["ID"]: row for row in table(stack.cli("schedules", "ls").out)}
    assert set(rows) == {"code:Tick:heartbeat", "nightly"}
    assert rows["nightly"]["TARGET"] == "Tick/run" and rows["nightly"]["OVERLAP/CATCH-UP"] == "queue/once"
    assert rows["code:Tick:heartbeat"]["WHEN"] == "* * * * * * (UTC)"

    shown = stack.cli("schedules", "show", "nightly")
    assert shown.code == 0 and "policies   overlap queue, catch-up once" in shown.out and '{"n": 1}' in shown.out
    paused = stack.cli("schedules", "pause", "nightly")
    assert paused.out == "paused nightly\n"
    assert {r["ID"]: r for r in table(stack.cli("sch", "ls").out)}["nightly"]["NEXT_FIRE"] == "paused"
    resumed = stack.cli("schedules", "resume", "nightly")
    assert resumed.code == 0 and resumed.out.startswith("resumed nightly, next fire 20")
    as_json = json.loads(stack.cli("schedules", "show", "nightly", "--json").out)
    assert as_json["paused"] is False and as_json["input"] == {"n": 1}
    interval = stack.cli("schedules", "create", "Tick/run", "--every", "90s", "--paused")
    assert interval.code == 0 and "every 90s" in interval.out

    deleted = stack.cli("schedules", "delete", "nightly")
    assert deleted.out == "deleted nightly\n"
    missing = stack.cli("schedules", "delete", "nightly")
    assert missing.code == 1 and missing.err.strip() == "error: 404 not_found: schedule 'nightly' not found"
    bad = stack.cli("schedules", "create", "Tick/run", "--cron", "nope")
    assert bad.code == 1 and "400 bad_request" in bad.err and "not a cron expression" in bad.err
    usage = stack.cli("schedules", "create", "Tick/run")  # neither --cron nor --every
    assert usage.code == 2
    target = stack.cli("schedules", "create", "Tick", "--every", "1s")
    assert target.code == 2 and "Service/handler" in target.err


def test_deployments_show_and_update(cluster: Cluster) -> None:
    stack = _stack(cluster, QUIET)
    (deployment,) = table(stack.cli("deployments", "ls").out)
    sleeping = stack.proxy.send("Tick/hold", {"seconds": 3600})
    stack.proxy.wait_status(sleeping, "suspended")
    shown = stack.cli("deployments", "show", deployment["ID"])
    assert shown.code == 0, shown.err
    assert "pinned     1 not completed: 1 suspended" in shown.out and sleeping in shown.out

    moved_to = cluster.handler("tests.handlers.scheduled:application", env=QUIET, name="moved")
    updated = stack.cli("deployments", "update", deployment["ID"], moved_to.url)
    assert updated.code == 0, updated.err
    assert updated.out == f"{deployment['ID']} is served from {moved_to.url} now (1 pinned invocations go there)\n"
    assert table(stack.cli("deployments", "ls").out)[0]["URI"] == moved_to.url
    elsewhere = cluster.handler("tests.handlers.ledger:application", name="ledger")
    refused = stack.cli("deployments", "update", deployment["ID"], elsewhere.url)
    assert refused.code == 1 and "400 bad_request" in refused.err and "does not serve what" in refused.err
    unknown = cli("deployments", "show", "dp_nope", admin=stack.proxy.admin)
    assert unknown.code == 1 and "404 not_found" in unknown.err
