"""A handler deployed in two versions, for the patching end-to-end test: version 2 (the code
change) is selected by ``DURABLE_PATCH_VERSION=2``, as a redeployment of the service would.

Version 1 buys a label, sleeps, ships. Version 2 buys an insured label instead, behind
``ctx.patched("insured")``: invocations that slept under version 1 keep their plain label.

Run: ``DURABLE_PATCH_VERSION=2 uvicorn tests.handlers.patching:application``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from handlers_sdk import Context, Service, app

__all__ = ["VERSION", "application", "shipping"]

#: The version of the code this process runs.
VERSION = int(os.environ.get("DURABLE_PATCH_VERSION", "1"))

shipping = Service("Shipping")


async def label(order_id: str) -> str:
    return f"label-{order_id}"


async def insured_label(order_id: str) -> str:
    return f"insured-label-{order_id}"


async def dispatch(order_id: str, made: str) -> str:
    return f"{order_id} shipped with {made} by v{VERSION}"


@shipping.handler()
async def ship(ctx: Context, order_id: str) -> str:
    """Label, wait for the pick-up (durably), dispatch."""
    if VERSION >= 2 and ctx.patched("insured"):
        made = await ctx.run("insured-label", insured_label, order_id)
    else:
        made = await ctx.run("label", label, order_id)
    await ctx.sleep(timedelta(seconds=2))
    return await ctx.run("dispatch", dispatch, order_id, made)


application = app([shipping])
