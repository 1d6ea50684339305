"""The order-fulfilment saga: reserve inventory, charge the card, create a shipping label,
email the customer, mark the order complete. Each step is a journaled ``ctx.run``: kill the
handler or the proxy at any point and the order still completes, with no step repeated.

A declined card (amount over 10,000) fails the charge terminally; the saga then releases the
reservation (compensation) and fails the invocation with 402. An order with ``hold_seconds``
waits (durably, suspended) for a fraud-review hold after the charge; cancelling it meanwhile
(``PATCH :9070/invocations/{id}/cancel``) raises a TerminalError at that wait, and the saga
refunds the charge and releases the stock before failing with 409.

Run: ``uvicorn examples.orders:application --port 9080`` (``make run`` does it for you).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import msgspec

from handlers_sdk import Context, RunOptions, Service, TerminalError, app

__all__ = ["Order", "application", "orders", "process"]

orders = Service("OrderFulfillment")


class Order(msgspec.Struct, frozen=True):
    """An order as posted to ``/OrderFulfillment/process``."""

    order_id: str
    sku: str
    quantity: int
    amount: float
    email: str = "customer@example.com"
    #: Seconds of fraud-review hold between the charge and the shipping label.
    hold_seconds: float = 0.0


def _ref(prefix: str, *parts: object) -> str:
    return prefix + "_" + hashlib.sha256(repr(parts).encode()).hexdigest()[:10]


async def reserve_inventory(sku: str, quantity: int) -> str:
    """Reserve stock (stands in for a call to an inventory service)."""
    if quantity <= 0:
        raise TerminalError(f"quantity must be positive, got {quantity}", status_code=400)
    await asyncio.sleep(0.01)
    return _ref("res", sku, quantity)


async def release_inventory(reservation: str) -> bool:
    """Compensation: give the reserved stock back."""
    await asyncio.sleep(0.01)
    return True


def charge_customer(order_id: str, amount: float) -> str:
    """Charge the card (a sync client: it runs in a worker thread)."""
    if amount > 10_000:
        raise TerminalError(f"card declined for {amount:.2f}", status_code=402)
    return _ref("ch", order_id, amount)


async def refund_customer(charge_id: str) -> str:
    """Compensation: refund a charge."""
    await asyncio.sleep(0.01)
    return "refund_" + charge_id


async def create_shipping_label(order_id: str, sku: str) -> str:
    """Buy a shipping label from the carrier."""
    await asyncio.sleep(0.01)
    return _ref("lbl", order_id, sku)


async def send_confirmation(email: str, order_id: str, label: str) -> bool:
    """Email the customer."""
    await asyncio.sleep(0.01)
    return True


async def mark_complete(order_id: str) -> str:
    """Record the order as fulfilled."""
    return "fulfilled"


@orders.handler()
async def process(ctx: Context, order: Order) -> str:
    """Fulfil one order, exactly once per step."""
    reservation = await ctx.run("reserve", reserve_inventory, order.sku, order.quantity)
    try:
        charge_id = await ctx.run_with(
            RunOptions(max_attempts=3), "charge", charge_customer, order.order_id, order.amount
        )
    except TerminalError:
        await ctx.run("release", release_inventory, reservation)
        raise
    try:
        if order.hold_seconds > 0:
            await ctx.sleep(timedelta(seconds=order.hold_seconds))
        label = await ctx.run("label", create_shipping_label, order.order_id, order.sku)
    except TerminalError:
        # Cancelled during the hold (or the carrier refused): undo what was done, in reverse.
        await ctx.run("refund", refund_customer, charge_id)
        await ctx.run("release", release_inventory, reservation)
        raise
    await ctx.run("email", send_confirmation, order.email, order.order_id, label)
    await ctx.run("complete", mark_complete, order.order_id)
    return f"Order {order.order_id} fulfilled (charge {charge_id}, label {label})"


application = app([orders])
