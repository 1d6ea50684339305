"""``python -m proxy services limits ...`` and the queue in ``invocations ls|show``, against a real
proxy and the limited handlers (`tests.handlers.limited`: ``Limited/slow`` runs 2 at a time)."""

from __future__ import annotations

import json

from tests.cli.helpers import Stack, fields, table
from tests.e2e.harness import Cluster


def _stack(cluster: Cluster) -> Stack:
    handler = cluster.handler("tests.handlers.limited:application", env={"LIMITS_LEDGER": str(cluster.tmp_path / "l")})
    proxy = cluster.proxy([handler], services=["Limited"])
    return Stack(proxy, handler)


def test_limits_show_the_queue_and_an_override_set_and_reset(cluster: Cluster) -> None:
    stack = _stack(cluster)
    sent = [stack.proxy.send("Limited/slow", 3.0) for _ in range(4)]
    shown = stack.cli("services", "limits", "Limited")
    assert shown.code == 0, shown.err
    head, _, groups = shown.out.partition("\n\n")
    assert head.splitlines()[0] == "Limited: limits from the code"
    limits = {row["HANDLER"]: row for row in table("\n".join(head.splitlines()[1:]))}
    assert limits["slow"]["LIMIT"] == "2 at once" and limits["paced"]["LIMIT"] == "5/s (burst 1)"
    assert table(groups) == [{"GROUP": "Limited/slow", "RUNNING": "2", "QUEUED": "2"}]

    rows = {row["ID"]: row for row in table(stack.cli("invocations", "ls", "--width", "200").out)}
    assert rows[sent[2]]["STATUS"] == "pending"
    assert rows[sent[3]]["INFO"] == "number 2 in line for the concurrency limit of Limited/slow"
    details = fields(stack.cli("invocations", "show", sent[2]).out)
    assert details["limits"] == "number 1 in line for the concurrency limit of Limited/slow"

    wider = stack.cli("services", "limits", "Limited", "--set", '{"handlers": {"slow": {"concurrency": 4}}}')
    assert wider.code == 0 and wider.out.startswith("Limited: limits from the operator override"), wider.out
    assert stack.proxy.wait_status(sent[3], "running")["status"] == "running"
    as_json = json.loads(stack.cli("services", "limits", "Limited", "--json").out)
    assert as_json["override"] == {"handlers": {"slow": {"concurrency": 4}}}
    reset = stack.cli("services", "limits", "Limited", "--reset")
    assert reset.code == 0 and reset.out.startswith("Limited: limits from the code")


def test_limits_refuse_bad_input_with_a_clear_message(cluster: Cluster) -> None:
    stack = _stack(cluster)
    not_json = stack.cli("services", "limits", "Limited", "--set", "{nope")
    assert not_json.code == 2 and "--set takes the limits as JSON" in not_json.out
    typo = stack.cli("services", "limits", "Limited", "--set", '{"handlers": {"slow": {"concurency": 1}}}')
    assert typo.code == 1 and "400 bad_request" in typo.err and "unknown field(s) concurency" in typo.err
    unknown = stack.cli("services", "limits", "Nope")
    assert unknown.code == 1 and "404 not_found" in unknown.err
