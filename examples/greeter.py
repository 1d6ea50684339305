"""The smallest durable handler: one journaled step.

Run: ``uvicorn examples.greeter:application --port 9080``
"""

from __future__ import annotations

from handlers_sdk import Context, Service, app

greeter = Service("Greeter")


def make_greeting(name: str) -> str:
    """A side effect that must happen once per invocation (imagine sending an email)."""
    return f"Hello, {name}!"


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    """Greet `name`, durably."""
    return str(await ctx.run("greeting", make_greeting, name))


application = app([greeter])
