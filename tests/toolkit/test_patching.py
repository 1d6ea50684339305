"""ctx.patched: invocations in flight keep the old branch, new ones take the new one, and both
replay cleanly against the new code (and after `deprecate_patch`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from handlers_sdk import Context, Service
from handlers_sdk.protocol import JournalExport, PatchEntry, RunEntry
from handlers_sdk.testing import Invocation, LocalRuntime
from handlers_sdk.testing.replayer import replay_journal

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]
#: The version of the code "deployed": 1 before the change, 2 with the patch, 3 once deprecated.
DEPLOYED = {"version": 1}
PUBLISHED: list[str] = []

shipping = Service("Shipping")


async def label(order_id: str) -> str:
    return f"label-{order_id}"


async def insured_label(order_id: str) -> str:
    return f"insured-{order_id}"


async def publish(awakeable_id: str) -> None:
    PUBLISHED.append(awakeable_id)


@shipping.handler()
async def ship(ctx: Context, order_id: str) -> str:
    version = DEPLOYED["version"]
    if version == 3:
        ctx.deprecate_patch("insured")
        made = await ctx.run("insured-label", insured_label, order_id)
    elif version == 2 and ctx.patched("insured"):
        made = await ctx.run("insured-label", insured_label, order_id)
    else:
        made = await ctx.run("label", label, order_id)
    awakeable_id, picked_up = ctx.awakeable(str)
    await ctx.run("publish", publish, awakeable_id)
    return f"{made} picked up by {await picked_up}"


@pytest.fixture(autouse=True)
def _version_one() -> None:
    DEPLOYED["version"] = 1
    PUBLISHED.clear()


def _export(inv: Invocation) -> JournalExport:
    """`inv` as the proxy exports it (``GET :9070/invocations/{id}/journal``)."""
    return JournalExport(
        invocation_id=inv.id,
        service="Shipping",
        handler="ship",
        input=msgspec.Raw(inv.input),
        journal=inv.journal_items,
    )


@pytest.mark.parametrize("mode", MODES)
async def test_in_flight_invocations_keep_the_old_branch_and_new_ones_take_the_patch(mode: Any) -> None:
    rt = LocalRuntime([shipping], mode=mode)
    old = await rt.start("Shipping", "ship", "o-1")
    assert old.status == "suspended"
    DEPLOYED["version"] = 2  # the patched code is deployed while "o-1" waits
    new = await rt.start("Shipping", "ship", "o-2")
    assert new.status == "suspended"
    assert isinstance(new.journal[0], PatchEntry) and new.journal[0].name == "insured"
    assert not any(isinstance(e, PatchEntry) for e in old.journal.values())
    for awakeable_id in PUBLISHED:
        rt.resolve_awakeable(awakeable_id, "courier")
    await rt.resume(old)
    await rt.resume(new)
    assert old.result(str) == "label-o-1 picked up by courier"
    assert new.result(str) == "insured-o-2 picked up by courier"
    assert [e.name for e in new.journal.values() if isinstance(e, RunEntry)] == ["insured-label", "publish"]


async def test_journals_of_both_branches_replay_clean_against_the_patched_and_the_deprecated_code() -> None:
    rt = LocalRuntime([shipping])
    old = await rt.start("Shipping", "ship", "o-1")
    DEPLOYED["version"] = 2
    new = await rt.start("Shipping", "ship", "o-2")
    for inv in (old, new):
        report = await replay_journal([shipping], _export(inv))
        assert report.status == "ok", report.format()
    DEPLOYED["version"] = 3  # every old-branch invocation is done: the check becomes deprecate_patch
    report = await replay_journal([shipping], _export(new))
    assert report.status == "ok", report.format()
    fresh = await rt.start("Shipping", "ship", "o-3")
    assert not any(isinstance(e, PatchEntry) for e in fresh.journal.values())


async def test_a_new_invocation_past_the_end_of_its_journal_writes_the_marker_once() -> None:
    DEPLOYED["version"] = 2
    rt = LocalRuntime([shipping], mode="suspend")
    inv = await rt.start("Shipping", "ship", "o-9")
    # suspend mode re-invokes after each step: every replay found the marker and took the same branch
    assert inv.attempts >= 3
    assert [type(e).__name__ for e in inv.journal.values()][:2] == ["PatchEntry", "RunEntry"]
    assert sum(isinstance(e, PatchEntry) for e in inv.journal.values()) == 1
