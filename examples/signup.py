"""A workflow with a durable promise: sign a user up, email a confirmation link, wait until the
link is clicked (another handler resolves the promise), then activate the account.

Run: ``uvicorn examples.signup:application --port 9080`` and register it with the proxy.
"""

from __future__ import annotations

import logging

from handlers_sdk import Workflow, WorkflowContext, WorkflowSharedContext, app

__all__ = ["application", "click", "run", "signup", "status"]

log = logging.getLogger("examples.signup")
signup = Workflow("Signup")


def send_email(email: str, link: str) -> bool:
    """Stands in for a mail API."""
    log.warning("to %s: confirm with %s", email, link)
    return True


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    """Runs once per key (the user id): email a link and wait for the click."""
    ctx.set("status", "waiting for confirmation")
    link = f"POST /Signup/{ctx.key()}/click"
    await ctx.run("send email", send_email, email, link)
    secret = await ctx.promise("email-link", str).value()
    ctx.set("status", "active")
    return f"{email} confirmed with {secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    """The user clicked the link: resolve the promise the run is waiting on."""
    await ctx.promise("email-link", str).resolve(secret)  # awaited: a second resolution raises 409 here


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    """Where the signup is (a query)."""
    return await ctx.get("status", str)


application = app([signup])
