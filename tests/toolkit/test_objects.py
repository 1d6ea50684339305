"""LocalRuntime with virtual objects (state) and workflows (durable promises)."""

from __future__ import annotations

from typing import Any

import pytest

from examples.counter import counter
from examples.signup import signup
from handlers_sdk import TerminalError
from handlers_sdk.protocol import SetStateEntry
from handlers_sdk.testing import LocalRuntime, check_replay_safety

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODES = ["suspend", "ack"]


@pytest.mark.parametrize("mode", MODES)
async def test_object_state_is_kept_per_key_across_invocations(mode: Any) -> None:
    rt = LocalRuntime(counter, mode=mode)
    assert await rt.call("Counter", "add", 2, key="a") == 2
    assert await rt.call("Counter", "add", 3, key="a") == 5
    assert await rt.call("Counter", "add", 7, key="b") == 7
    assert await rt.call("Counter", "get", key="a") == 5
    assert rt.state[("Counter", "a")] == {"count": b"5"}
    await rt.call("Counter", "reset", key="a")
    assert await rt.call("Counter", "get", key="a") == 0
    inv = rt.invocations["inv_local000002"]
    assert isinstance(inv.journal[1], SetStateEntry)


@pytest.mark.parametrize("mode", MODES)
async def test_a_workflow_waits_for_its_promise_and_wakes_when_it_is_resolved(mode: Any) -> None:
    rt = LocalRuntime(signup, mode=mode)
    run = await rt.start("Signup", "run", "ada@example.com", key="u1")
    assert run.status == "suspended"
    assert await rt.call("Signup", "status", key="u1") == "waiting for confirmation"
    await rt.call("Signup", "click", "s3cret", key="u1")
    assert run.outcome is not None and run.is_done
    assert run.result() == "ada@example.com confirmed with s3cret"
    assert await rt.call("Signup", "status", key="u1") == "active"


async def test_a_second_click_fails_with_409() -> None:
    rt = LocalRuntime(signup)
    rt.resolve_promise("Signup", "u2", "email-link", "first")
    with pytest.raises(TerminalError) as caught:
        await rt.call("Signup", "click", "second", key="u2")
    assert caught.value.status_code == 409


def test_objects_and_workflows_are_replay_safe() -> None:
    assert check_replay_safety(counter, "add", 4, key="k").ok

    def link_clicked(rt: LocalRuntime) -> None:
        rt.resolve_promise("Signup", "u1", "email-link", "s3cret")

    report = check_replay_safety(signup, "run", "ada@example.com", key="u1", prepare=link_clicked)
    assert report.ok and report.baseline.result() == "ada@example.com confirmed with s3cret"
    unresolved = check_replay_safety(signup, "run", "ada@example.com", key="u1", raise_on_failure=False)
    assert unresolved.first is not None and unresolved.first.kind == "suspended"
    assert "promise_get" in unresolved.format() or "email-link" in unresolved.format()
