"""The ledger handler: N sequential `ctx.run` steps, each writing ``start``/``end`` lines to a ledger.

Every step body appends ``"<inv> <idx> start|end <pid> <nonce>\\n"`` to the O_APPEND file named by
``LEDGER_PATH`` (one ``write`` per line, so lines survive SIGKILL whole) and returns
``{"idx", "pid", "nonce"}``: the nonce in the journal says which execution's result was committed.

Environment (read at import, so a restart can change it):

* ``LEDGER_PATH``: the ledger file (required).
* ``LEDGER_STEP_PREFIX``: step names are ``{prefix}{idx}`` (default ``step``); changing it between
  attempts makes the replay diverge (journal mismatch, 570).
* ``HANDLER_FAULTS``: comma-separated crash points ``step{idx}.{point}`` with point one of
  ``before_start`` (after step idx-1 was acked), ``before_body`` (after the ``start`` line),
  ``after_body`` (after the ``end`` line, before the ack). The process SIGKILLs itself there, once
  per point (a marker file next to the ledger remembers), or every time with a ``:always`` suffix.

Run: ``uvicorn tests.handlers.ledger:application`` (ack mode) or ``...:suspend_application``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from datetime import timedelta
from typing import Any

import msgspec

from handlers_sdk import Context, Service, TerminalError, app

__all__ = ["Job", "application", "ledger", "record", "suspend_application"]

LEDGER_PATH = os.environ.get("LEDGER_PATH", "")
STEP_PREFIX = os.environ.get("LEDGER_STEP_PREFIX", "step")
FAULT_POINTS = ("before_start", "before_body", "after_body")


def _parse_faults(spec: str) -> dict[str, bool]:
    faults: dict[str, bool] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, mode = part.partition(":")
        step, _, point = name.partition(".")
        if not step.startswith("step") or not step[4:].isdigit() or point not in FAULT_POINTS:
            raise ValueError(f"bad HANDLER_FAULTS entry {part!r}: use step<idx>.<{'|'.join(FAULT_POINTS)}>[:always]")
        faults[name] = mode == "always"
    return faults


FAULTS = _parse_faults(os.environ.get("HANDLER_FAULTS", ""))


def _once(tag: str) -> bool:
    """True the first time `tag` is seen by any process of this test (a marker file next to the ledger)."""
    try:
        fd = os.open(f"{LEDGER_PATH}.{tag}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fault(idx: int, point: str) -> None:
    """SIGKILL this process if ``step{idx}.{point}`` is armed (and, unless ``:always``, not yet fired)."""
    name = f"step{idx}.{point}"
    always = FAULTS.get(name)
    if always is None:
        return
    if always or _once(f"fault.{name}"):
        os.kill(os.getpid(), signal.SIGKILL)


def record(inv: str, idx: int, kind: str, nonce: str) -> None:
    """Append one ledger line with a single O_APPEND write."""
    fd = os.open(LEDGER_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{inv} {idx} {kind} {os.getpid()} {nonce}\n".encode())
    finally:
        os.close(fd)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """Input of ``Ledger/run``."""

    steps: int = 10
    sleep: float = 0.0
    slow_step: int = -1
    slow_sleep: float = 0.0
    #: Only the first execution of the slow step is slow (later ones take `sleep`).
    slow_once: bool = False
    tag: str = ""


async def step_body(inv: str, idx: int, sleep: float, job: Job) -> dict[str, Any]:
    """One step: ledger ``start``, some work, ledger ``end``; crash points around it."""
    nonce = secrets.token_hex(8)
    fault(idx, "before_start")
    record(inv, idx, "start", nonce)
    fault(idx, "before_body")
    if idx == job.slow_step and (not job.slow_once or _once(f"slow.{inv}.{idx}")):
        sleep = job.slow_sleep
    if sleep:
        await asyncio.sleep(sleep)
    record(inv, idx, "end", nonce)
    fault(idx, "after_body")
    return {"idx": idx, "pid": os.getpid(), "nonce": nonce}


ledger = Service("Ledger")


@ledger.handler()
async def run(ctx: Context, job: Job | None) -> dict[str, Any]:
    """Run `job.steps` journaled steps one after the other; returns their nonces."""
    job = job or Job()
    nonces: list[str] = []
    for idx in range(job.steps):
        value = await ctx.run(f"{STEP_PREFIX}{idx}", step_body, ctx.invocation_id, idx, job.sleep, job)
        nonces.append(value["nonce"])
    return {"nonces": nonces, "tag": job.tag}


@ledger.handler()
async def sleepy(ctx: Context, job: Job | None) -> dict[str, Any]:
    """Step 0, a durable sleep of `job.sleep` seconds, step 1 (timers across crashes)."""
    job = job or Job()
    first = await ctx.run(f"{STEP_PREFIX}0", step_body, ctx.invocation_id, 0, 0.0, job)
    await ctx.sleep(timedelta(seconds=job.sleep))
    second = await ctx.run(f"{STEP_PREFIX}1", step_body, ctx.invocation_id, 1, 0.0, job)
    return {"nonces": [first["nonce"], second["nonce"]], "tag": job.tag}


@ledger.handler()
async def held(ctx: Context, job: Job | None) -> dict[str, Any]:
    """Step 0, a durable hold (sleep) of `job.sleep` seconds, step 1. Cancelled during the hold,
    it runs `job.steps` compensation steps (2, 3, ...) and re-raises the cancellation."""
    job = job or Job()
    inv = ctx.invocation_id
    await ctx.run(f"{STEP_PREFIX}0", step_body, inv, 0, 0.0, job)
    try:
        await ctx.sleep(timedelta(seconds=job.sleep))
        await ctx.run(f"{STEP_PREFIX}1", step_body, inv, 1, 0.0, job)
    except TerminalError:
        for idx in range(2, 2 + job.steps):
            await ctx.run(f"{STEP_PREFIX}{idx}", step_body, inv, idx, 0.0, job)
        raise
    return {"tag": job.tag}


def _big(size: int) -> str:
    return "x" * size


@ledger.handler()
async def big_step(ctx: Context, size: int) -> int:
    """One step whose result is `size` bytes (to hit the proxy's entry limit)."""
    value = await ctx.run("big", _big, size)
    return len(value)


@ledger.handler()
async def big_result(ctx: Context, size: int) -> str:
    """A result of `size` bytes without any step (to hit the proxy's response limit)."""
    return _big(size)


application = app([ledger])
suspend_application = app([ledger], mode="suspend")
