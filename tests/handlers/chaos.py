"""The chaos-soak handler service: the ledger's `Ledger` service and the `Counter` virtual object.

Run: ``uvicorn tests.handlers.chaos:application``.
"""

from __future__ import annotations

from handlers_sdk import app
from tests.handlers.durable import counter
from tests.handlers.ledger import ledger

__all__ = ["application"]

application = app([ledger, counter])
