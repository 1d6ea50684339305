"""Handlers for the security end-to-end tests: a public handler that calls an ``ingress_private`` one,
and one that shows the headers it was invoked with.

Run: ``uvicorn tests.handlers.guarded:application``.
"""

from __future__ import annotations

from handlers_sdk import Context, Service, app

front = Service("Front")
back = Service("Back", ingress_private=True)


@back.handler()
async def secret(ctx: Context, name: str) -> str:
    """Callable from other handlers only (the service's default: ``ingress_private``)."""
    return await ctx.run("greet", lambda: f"psst, {name}")


@back.handler(ingress_private=False)
async def hello(ctx: Context, name: str) -> str:
    """A public handler of a private service (the handler's flag overrides the service's)."""
    return f"hello {name}"


@front.handler()
async def greet(ctx: Context, name: str) -> str:
    """Calls Back/secret, which the ingress refuses."""
    return await ctx.service_call(secret, name)


@front.handler(ingress_private=True)
async def internal(ctx: Context) -> str:
    """A private handler of a public service."""
    return "internal"


@front.handler()
async def headers(ctx: Context) -> dict[str, str]:
    """The headers the ingress request carried, as the handler received them."""
    return dict(ctx.headers)


application = app([front, back])
