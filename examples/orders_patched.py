"""The order saga of `examples.orders`, changed while orders are in flight: a fraud screening step
after the charge, shipped behind ``ctx.patched("fraud-screen")``.

An order that was already past the charge when this code was deployed (waiting in its fraud-review
hold, say) has no marker in its journal at that point: ``ctx.patched`` gives False and it goes on
as the old code did, so its journal replays cleanly. Every order that gets there afterwards
journals the marker and is screened. See docs/testing.md ("Ship a change to code in flight").

Run: ``uvicorn examples.orders_patched:application --port 9080`` in place of ``examples.orders``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from examples.orders import (
    Order,
    charge_customer,
    create_shipping_label,
    mark_complete,
    refund_customer,
    release_inventory,
    reserve_inventory,
    send_confirmation,
)
from handlers_sdk import Context, RunOptions, Service, TerminalError, app

__all__ = ["application", "orders", "process", "screen_order"]

orders = Service("OrderFulfillment")


async def screen_order(order_id: str, amount: float) -> bool:
    """Ask the fraud service about the order (the new step)."""
    await asyncio.sleep(0.01)
    return amount < 5_000


@orders.handler()
async def process(ctx: Context, order: Order) -> str:
    """Fulfil one order, exactly once per step; screened for fraud since the "fraud-screen" change."""
    reservation = await ctx.run("reserve", reserve_inventory, order.sku, order.quantity)
    try:
        charge_id = await ctx.run_with(
            RunOptions(max_attempts=3), "charge", charge_customer, order.order_id, order.amount
        )
    except TerminalError:
        await ctx.run("release", release_inventory, reservation)
        raise
    try:
        if ctx.patched("fraud-screen") and not await ctx.run("screen", screen_order, order.order_id, order.amount):
            raise TerminalError(f"order {order.order_id} held by fraud screening", status_code=403)
        if order.hold_seconds > 0:
            await ctx.sleep(timedelta(seconds=order.hold_seconds))
        label = await ctx.run("label", create_shipping_label, order.order_id, order.sku)
    except TerminalError:
        await ctx.run("refund", refund_customer, charge_id)
        await ctx.run("release", release_inventory, reservation)
        raise
    await ctx.run("email", send_confirmation, order.email, order.order_id, label)
    await ctx.run("complete", mark_complete, order.order_id)
    return f"Order {order.order_id} fulfilled (charge {charge_id}, label {label})"


application = app([orders])
