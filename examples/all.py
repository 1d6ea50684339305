"""Every example service in one app (handy for trying them all with one proxy)."""

from __future__ import annotations

from examples.approval import reviews, summarizer
from examples.counter import counter
from examples.greeter import greeter
from examples.orders import orders
from examples.signup import signup
from handlers_sdk import app

__all__ = ["application"]

application = app([orders, greeter, counter, signup, summarizer, reviews])
