"""The handler `tests.cli.test_dev` runs under ``python -m proxy dev`` (a copy of it, then edits it)."""

from __future__ import annotations

from handlers_sdk import Context, Service, app

__all__ = ["application", "greet", "greeter"]

GREETING = "Hello"

greeter = Service("DevGreeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    """One journaled step."""
    return str(await ctx.run("greeting", lambda: f"{GREETING}, {name}!"))


application = app([greeter])
