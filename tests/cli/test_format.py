"""The CLI's formatting helpers, without any process."""

from __future__ import annotations

import io
from typing import Any

import pytest

from proxy.tools import cli
from proxy.tools import render as tables

NOW = 1_800_000_000_000


def test_format_table_aligns_columns() -> None:
    text = tables.format_table(["ID", "STATUS", "INFO"], [["a", "running", "x"], ["bbbb", "ok", ""]])
    assert text.splitlines() == ["ID    STATUS   INFO", "a     running  x", "bbbb  ok"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0ms"), (0.25, "250ms"), (42.9, "42s"), (192, "3m12s"), (18120, "5h02m"), (2 * 86400 + 3 * 3600, "2d03h")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert tables.format_age(seconds) == text


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        ({"type": "run", "name": "charge", "value": {"ok": True}}, "run 'charge' = {\"ok\":true}"),
        (
            {"type": "run", "name": "charge", "failure": {"code": 402, "message": "declined"}},
            "run 'charge' failed: 402 declined",
        ),
        ({"type": "sleep", "wake_at_ms": NOW + 90_000}, "sleep until 2027-01-15 08:01:30.000Z (in 1m30s)"),
        ({"type": "sleep", "wake_at_ms": NOW, "completed": True}, "sleep until 2027-01-15 08:00:00.000Z (done)"),
        (
            {"type": "call", "service": "Child", "handler": "work", "input": 3, "invocation_id": "inv_c"},
            "call Child/work(3) -> inv_c (pending)",
        ),
        (
            {"type": "call", "service": "Counter", "key": "k", "handler": "add", "input": 1, "invocation_id": "inv_c",
             "completed": True, "value": 5},
            "call Counter/k/add(1) -> inv_c = 5",
        ),
        (
            {"type": "send", "service": "Child", "handler": "work", "input": 7, "invocation_id": "inv_s",
             "delay_ms": 5000},
            "send Child/work(7) -> inv_s after 5s",
        ),
        ({"type": "awakeable", "id": "awk_1", "completed": True, "value": "yes"}, 'awakeable awk_1 = "yes"'),
        ({"type": "get_state", "key": "count", "found": True, "value": 2}, "get state 'count' = 2"),
        ({"type": "get_state", "key": "count"}, "get state 'count' (not set)"),
        ({"type": "set_state", "key": "count", "value": 3}, "set state 'count' = 3"),
        ({"type": "clear_state", "key": "count"}, "clear state 'count'"),
        ({"type": "clear_all_state"}, "clear all state"),
        ({"type": "state_keys", "keys": ["a"]}, 'state keys = ["a"]'),
        ({"type": "promise_get", "name": "link"}, "promise get 'link' (pending)"),
        ({"type": "promise_peek", "name": "link", "completed": True}, "promise peek 'link' (not resolved)"),
        (
            {"type": "promise_complete", "name": "link", "resolution": "s3cret"},
            "promise complete 'link': resolve \"s3cret\"",
        ),
        ({"type": "future_kind", "x": 1}, 'future_kind {"x":1}'),
    ],
)  # fmt: skip
def test_format_entry(entry: dict[str, Any], text: str) -> None:
    assert tables.format_entry(entry, NOW) == text


def test_sleep_of_a_completed_invocation_never_fires() -> None:
    entry = {"type": "sleep", "wake_at_ms": NOW + 1000}
    assert tables.format_entry(entry, NOW, finished=True).endswith("(never fired)")


def _view(**fields: Any) -> dict[str, Any]:
    base = {"id": "inv_1", "target": "S/h", "status": "running", "attempt": 1, "retry_count": 0, "created_ms": NOW}
    return {**base, **fields}


def test_info_column() -> None:
    backing = _view(status="backing-off", next_retry_ms=NOW + 4000, last_failure={"code": 503, "message": "down"})
    assert tables.info_line(backing, NOW) == "retry in 4s; last failure: 503 down"
    waits = [
        {"index": 2, "kind": "call", "target": "Child/work", "invocation_id": "inv_c"},
        {"index": 3, "kind": "promise", "name": "p"},
    ]
    suspended = _view(status="suspended", waiting_on=waits)
    assert tables.info_line(suspended, NOW) == "waiting on call Child/work inv_c, promise 'p'"
    assert tables.info_line(_view(status="completed", result={"a": 1}), NOW) == 'ok: {"a":1}'
    assert tables.info_line(_view(status="completed", failure={"code": 409, "message": "invocation killed"}), NOW) == (
        "failed: 409 invocation killed"
    )


def test_show_layout() -> None:
    view = _view(
        status="suspended",
        waiting_on=[{"index": 1, "kind": "timer", "wake_at_ms": NOW + 60_000}],
        journal=[{"index": i, "entry": {"type": "run", "name": f"s{i}", "value": i}} for i in range(11)],
    )
    lines = tables.render_invocation(view, NOW).splitlines()
    assert lines[0] == "id:          inv_1"
    assert "waiting on:  timer in 1m00s" in lines
    assert "journal (11 entries):" in lines
    assert lines[-11:][0] == "   0. run 's0' = 0"
    assert lines[-1] == "  10. run 's10' = 10"


def test_help_and_bad_flags_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["invocations", "--help"]) == 0
    assert "ls" in capsys.readouterr().out
    assert cli.main(["invocations", "show"]) == 2
    assert "the following arguments are required: id" in capsys.readouterr().err
    out = io.StringIO()
    assert cli.main(["services", "ls", "--admin", "http://127.0.0.1:1", "--timeout", "2"], out=out) == 1
    assert "cannot reach the admin API at http://127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (
            {"type": "call", "service": "Child", "handler": "work", "input": 3, "invocation_id": "inv_c"},
            "call Child/work(3) -> inv_c (never completed)",
        ),
        ({"type": "awakeable", "id": "awk_1"}, "awakeable awk_1 (never completed)"),
        ({"type": "promise_get", "name": "link"}, "promise get 'link' (never completed)"),
        ({"type": "awakeable", "id": "awk_1", "completed": True, "value": 1}, "awakeable awk_1 = 1"),
        ({"type": "sleep", "wake_at_ms": NOW, "completed": True}, "sleep until 2027-01-15 08:00:00.000Z (done)"),
    ],
)
def test_waits_of_a_completed_invocation_never_complete(entry: dict[str, Any], text: str) -> None:
    """No "(pending)" on a finished invocation: what it waited for will not come any more."""
    assert tables.format_entry(entry, NOW, finished=True) == text


def test_a_completed_invocation_shows_no_next_retry() -> None:
    """Killed while backing off, an invocation keeps its retry time: `show` prints no countdown."""
    view = {"id": "inv_x", "status": "completed", "next_retry_ms": NOW + 60_000, "completed_ms": NOW}
    assert "next retry" not in tables.render_invocation(view, NOW)
    assert "next retry:" in tables.render_invocation({**view, "status": "backing-off"}, NOW)
