"""An agent-style workflow that waits for a human: draft, ask for approval, wait (durably) for
the answer or a timeout, then publish or escalate.

While it waits the invocation is *suspended*: no request, task or memory is held; the proxy
keeps a timer row and the awakeable in LMDB and re-invokes the handler when either completes,
also after a restart of either process.

Run: ``uvicorn examples.approval:application --port 9080`` and register it with the proxy.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import msgspec

from handlers_sdk import Context, Service, app, select

__all__ = ["ReviewRequest", "application", "review", "summarizer"]

log = logging.getLogger("examples.approval")

summarizer = Service("Summarizer")
reviews = Service("Review")


class ReviewRequest(msgspec.Struct, frozen=True):
    """A document to draft, approve and publish."""

    title: str
    text: str
    timeout_seconds: float = 3 * 24 * 3600.0


@summarizer.handler()
async def summarize(ctx: Context, text: str) -> str:
    """A stand-in for an LLM call: the first sentence, journaled so it is paid for once."""

    def first_sentence() -> str:
        return text.split(".")[0].strip() + "."

    return await ctx.run("summarize", first_sentence)  # a str: first_sentence's return type


def notify_reviewer(title: str, awakeable_id: str) -> str:
    """Hand the awakeable id to the outside world (an email or a chat message in real life)."""
    log.warning("review %r: approve with POST /restate/awakeables/%s/resolve", title, awakeable_id)
    return awakeable_id


@reviews.handler()
async def review(ctx: Context, request: ReviewRequest) -> dict[str, str]:
    """Summarize (a call to another service), wait for approval or time out, then finish."""
    summary = await ctx.service_call(summarize, request.text)
    awakeable_id, approval = ctx.awakeable()
    await ctx.run("notify reviewer", notify_reviewer, request.title, awakeable_id)
    winner, verdict = await select(approval=approval, timeout=ctx.sleep(timedelta(seconds=request.timeout_seconds)))
    if winner == "timeout":
        await ctx.run("escalate", lambda: f"escalated {request.title}")
        return {"title": request.title, "summary": summary, "outcome": "timed out: escalated"}
    decision = verdict.get("decision", "rejected") if isinstance(verdict, dict) else str(verdict)
    if decision == "approved":
        await ctx.run("publish", lambda: f"published {request.title}")
    return {"title": request.title, "summary": summary, "outcome": decision}


application = app([summarizer, reviews])
