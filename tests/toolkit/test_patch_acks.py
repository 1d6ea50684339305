"""In ack mode the entries after a patch marker are posted only once the marker is committed: a
journal never holds later entries without the marker (a replay would then take the old branch)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from handlers_sdk import Context, Service
from handlers_sdk.ack import AckClient
from handlers_sdk.attempt import run_attempt
from handlers_sdk.protocol import AppendRequest, InvokeRequest, PatchEntry, Suspended

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

svc = Service("Patched")


@svc.handler()
async def go(ctx: Context) -> None:
    ctx.patched("change")
    await ctx.sleep(timedelta(seconds=1))


class SlowMarkerAcks(AckClient):
    """Acks every entry, the patch marker slowly; records when each post starts and ends."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def append(self, callback_url: str, request: AppendRequest) -> bytes:
        kind = type(request.entry).__name__
        self.events.append(f"post {kind}")
        if isinstance(request.entry, PatchEntry):
            await asyncio.sleep(0.05)
        self.events.append(f"acked {kind}")
        return b'{"index":%d}' % request.index


async def test_the_entry_after_a_patch_marker_waits_for_the_marker_to_be_acked() -> None:
    acks = SlowMarkerAcks()
    request = InvokeRequest(
        invocation_id="inv_patch", service="Patched", handler="go", attempt=1, token="t", callback_url="http://proxy"
    )
    outcome = await run_attempt(svc.handlers["go"], request, "ack", acks)
    assert isinstance(outcome, Suspended) and outcome.waiting_on == [1]
    assert acks.events == ["post PatchEntry", "acked PatchEntry", "post SleepEntry", "acked SleepEntry"]
