"""A virtual object: a counter per key, with exclusive writes and a shared read.

Run: ``uvicorn examples.counter:application --port 9080`` and register it with the proxy.
"""

from __future__ import annotations

from handlers_sdk import ObjectContext, ObjectSharedContext, VirtualObject, app

__all__ = ["add", "application", "counter", "get", "reset"]

counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    """Add `delta` to this key's count (exclusive: one at a time per key, in arrival order)."""
    count = await ctx.get("count", int) or 0  # int | None: typed by the hint, decoded into it
    count += delta
    ctx.set("count", count)
    return count


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    """Read the count (shared: runs concurrently with everything)."""
    return await ctx.get("count", int) or 0


@counter.handler()
async def reset(ctx: ObjectContext) -> None:
    """Forget this key's state."""
    ctx.clear_all()


application = app([counter])
