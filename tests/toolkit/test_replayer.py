"""replay_journal and ``python -m handlers_sdk replay``: production journals against today's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from examples.orders import Order, orders
from handlers_sdk import Context, Service
from handlers_sdk.__main__ import load_services, main
from handlers_sdk.protocol import JournalItem, RunEntry
from handlers_sdk.testing import JournalExport, LocalRuntime, load_export, replay_journal
from tests.toolkit.services import LEDGER, good, line_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

ORDER = Order("o-1", "sku-1", 2, 99.0)


async def export_of(service: Service, handler: str, arg: Any, **kw: Any) -> JournalExport:
    """Run the handler locally and export it as the proxy would."""
    inv = await LocalRuntime(service, mode="ack").start(service, handler, arg, random_seed=42, **kw)
    outcome = inv.outcome
    result = getattr(outcome, "value", msgspec.Raw(b"null"))
    return JournalExport(
        invocation_id=inv.id,
        service=inv.service,
        handler=inv.handler,
        status=inv.status,
        random_seed=inv.random_seed,
        input=msgspec.Raw(inv.input),
        journal=inv.journal_items,
        result=result,
        failure=getattr(outcome, "failure", None),
    )


def renamed(export: JournalExport, index: int, name: str) -> JournalExport:
    items = [
        JournalItem(index=i.index, entry=msgspec.structs.replace(i.entry, name=name)) if i.index == index else i
        for i in export.journal
    ]
    return msgspec.structs.replace(export, journal=items)


async def test_a_completed_journal_replays_without_running_any_step() -> None:
    export = await export_of(good, "chain", 1)
    LEDGER.clear()
    report = await replay_journal([good], export)
    assert report.ok and report.status == "ok" and report.exit_code == 0
    assert "replay ok up to index 2: all 3 recorded entries replayed" in report.summary
    assert LEDGER == []


async def test_a_prefix_stops_before_the_first_new_step_without_running_it() -> None:
    export = await export_of(good, "chain", 1)
    prefix = msgspec.structs.replace(export, journal=export.journal[:2], status="running")
    LEDGER.clear()
    report = await replay_journal([good], prefix)
    assert report.status == "prefix" and report.exit_code == 0
    assert "replay ok up to index 1" in report.summary
    assert 'creates run "third" at index 2' in report.summary
    assert LEDGER == []


async def test_a_renamed_step_is_a_mismatch_with_a_readable_diff() -> None:
    export = renamed(await export_of(orders, "process", ORDER), 2, "ship")
    report = await replay_journal([orders], export)
    assert report.status == "mismatch" and report.exit_code == 1 and report.mismatch_index == 2
    label = line_of("examples.orders", 'ctx.run("label"')
    assert report.summary.startswith(f'journal mismatch at index 2: recorded run "ship" ({label})')
    assert f'replay attempted run "label" ({label})' in report.summary
    text = report.format()
    assert [line[:1] for line in text.splitlines()[3:]] == [" ", " ", ">", " ", " "]
    assert "(not reached)" in text


async def test_a_handler_that_now_skips_recorded_steps_is_a_mismatch() -> None:
    export = await export_of(good, "chain", 1)
    shorter = Service("Good")

    @shorter.handler("chain")
    async def chain(ctx: Context, n: int) -> int:
        return int(await ctx.run("first", lambda: n + 1))

    report = await replay_journal([shorter], export)
    assert report.status == "mismatch" and report.mismatch_index == 1
    assert 'without replaying 2 recorded entries, the first being run "second" at index 1' in report.summary


async def test_a_different_output_is_a_mismatch() -> None:
    export = await export_of(good, "chain", 1)
    changed = Service("Good")

    @changed.handler("chain")
    async def chain(ctx: Context, n: int) -> int:
        a = await ctx.run("first", lambda: 0)
        b = await ctx.run("second", lambda: 0)
        return int(await ctx.run("third", lambda: 0)) + int(a) + int(b) + 1000

    report = await replay_journal([changed], export)
    assert report.status == "mismatch"
    assert "the output differs: recorded result 4, replay gave result 1009" in report.summary


async def test_terminal_failures_replay_as_recorded() -> None:
    export = await export_of(orders, "process", Order("o-2", "sku-1", 1, 50_000.0))
    assert export.failure is not None and export.failure.code == 402
    report = await replay_journal([orders], export)
    assert report.ok, report.format()
    assert "terminal failure 402" in report.summary


async def test_a_journal_waiting_on_a_timer_replays_up_to_it() -> None:
    inv = await LocalRuntime(good).start("Good", "nap", 1)
    running = [i for i in inv.journal_items if i.index < 2]
    sleep = msgspec.structs.replace(running[1].entry, completed=False, seq=0)
    export = JournalExport(
        invocation_id=inv.id,
        service="Good",
        handler="nap",
        status="running",
        input=msgspec.Raw(inv.input),
        journal=[running[0], JournalItem(index=1, entry=sleep)],
    )
    report = await replay_journal([good], export)
    assert report.status == "ok"
    assert "waits on index 1 (sleep), as recorded" in report.summary


async def test_unknown_targets_raise_lookup_error() -> None:
    export = await export_of(good, "chain", 1)
    with pytest.raises(LookupError, match="no service 'Good'"):
        await replay_journal([orders], export)
    with pytest.raises(LookupError, match="no handler 'nope'"):
        await replay_journal([good], msgspec.structs.replace(export, handler="nope"))


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
async def journal_file(tmp_path: Path) -> Path:
    path = tmp_path / "journal.json"
    path.write_bytes(msgspec.json.encode(await export_of(orders, "process", ORDER)))
    return path


async def run_cli(args: list[str]) -> int:
    import asyncio

    # main() runs its own event loop: call it from a worker thread of this async test.
    return await asyncio.to_thread(main, args)


async def test_cli_ok(journal_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli(["replay", str(journal_file), "examples.orders:application"]) == 0
    assert "replay ok up to index 4" in capsys.readouterr().out


async def test_cli_mismatch(journal_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = renamed(load_export(journal_file.read_bytes()), 1, "charge-v1")
    journal_file.write_bytes(msgspec.json.encode(export))
    assert await run_cli(["replay", str(journal_file), "examples.orders:application"]) == 1
    out = capsys.readouterr().out
    assert 'journal mismatch at index 1: recorded run "charge-v1"' in out
    assert line_of("examples.orders", "charge_id = await ctx.run_with(") in out


async def test_cli_json_output(journal_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli(["replay", "--json", str(journal_file), "examples.orders:orders"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and [r["state"] for r in report["rows"]] == ["ok"] * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "{journal}", "examples.orders"], "expected module:attribute"),
        (["replay", "{journal}", "examples.nope:application"], "cannot import"),
        (["replay", "{journal}", "examples.orders:nope"], "has no attribute"),
        (["replay", "{journal}", "examples.orders:Order"], "is not a handlers_sdk app"),
        (["replay", "{journal}", "examples.greeter:application"], "no service 'OrderFulfillment'"),
        (["replay", "/nonexistent/journal.json", "examples.orders:application"], "cannot read"),
        (["replay", "{bad}", "examples.orders:application"], "is not a journal export"),
        (["replay"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
async def test_cli_usage_errors(
    args: list[str], message: str, journal_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = journal_file.parent / "bad.json"
    bad.write_text('{"journal": "nope"}')
    argv = [a.format(journal=journal_file, bad=bad) for a in args]
    assert await run_cli(argv) == 2
    assert message in capsys.readouterr().err


def test_load_services_accepts_apps_services_and_lists() -> None:
    assert load_services("examples.orders:application") == [orders]
    assert load_services("examples.orders:orders") == [orders]
    assert load_services("tests.toolkit.services:good") == [good]


def test_export_entries_are_wire_journal_items() -> None:
    item = JournalItem(index=0, entry=RunEntry(name="x", value=msgspec.Raw(b"1"), source="a.py:1"))
    export = load_export(
        msgspec.json.encode({"invocation_id": "inv_1", "service": "S", "handler": "h", "journal": [item]})
    )
    assert export.journal == [item] and export.status == "" and not export.completed


# -- a folder of journals: a code change against the invocations in flight ----------------------


async def in_flight_and_done(folder: Path) -> None:
    """Two journals of the saga as it was: one waiting in its fraud-review hold, one completed."""
    held = await export_of(orders, "process", Order("o-7", "sku-1", 1, 40.0, hold_seconds=60))
    reserve, charge, sleep = held.journal[:3]
    waiting = msgspec.structs.replace(sleep.entry, completed=False, seq=0)
    held = msgspec.structs.replace(
        held,
        status="suspended",
        journal=[reserve, charge, JournalItem(index=2, entry=waiting)],
        result=msgspec.Raw(b"null"),
    )
    folder.mkdir(exist_ok=True)
    (folder / "held.json").write_bytes(msgspec.json.encode(held))
    (folder / "done.json").write_bytes(msgspec.json.encode(await export_of(orders, "process", ORDER)))


async def test_cli_replays_a_folder_of_in_flight_journals_against_the_patched_saga(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await in_flight_and_done(tmp_path / "journals")
    assert await run_cli(["replay", str(tmp_path / "journals"), "examples.orders_patched:application"]) == 0
    out = capsys.readouterr().out
    assert "ok      done.json: OrderFulfillment/process" in out
    assert "ok      held.json: OrderFulfillment/process" in out and "waits on index 2 (sleep), as recorded" in out
    assert out.rstrip().endswith("2 journals replayed: 2 ok, 0 failed")


async def test_cli_folder_reports_each_journal_and_fails_if_one_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "journals"
    await in_flight_and_done(folder)
    done = load_export((folder / "done.json").read_bytes())
    (folder / "renamed.json").write_bytes(msgspec.json.encode(renamed(done, 3, "mail")))
    assert await run_cli(["replay", "--json", str(folder), "examples.orders_patched:application"]) == 1
    reports = {r["journal"].rpartition("/")[2]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert reports == {"done.json": "ok", "held.json": "ok", "renamed.json": "mismatch"}
    assert await run_cli(["replay", str(tmp_path), "examples.orders:application"]) == 2  # no *.json in it
    assert "holds no exported journal" in capsys.readouterr().err
