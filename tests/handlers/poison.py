"""A poison handler: ``Poison/run`` journals two steps, then the process dies at step 2 on every attempt.

Steps write the same ledger lines as `tests.handlers.ledger`. Step 2 calls ``os._exit(1)`` right
after its ``start`` line unless the file ``{LEDGER_PATH}.fixed`` exists (the "fix" a human deploys).

Run: ``uvicorn tests.handlers.poison:application``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from handlers_sdk import Context, Service, app
from tests.handlers.ledger import LEDGER_PATH, record

__all__ = ["application", "poison"]

poison = Service("Poison")


def _step(inv: str, idx: int) -> dict[str, Any]:
    nonce = secrets.token_hex(8)
    record(inv, idx, "start", nonce)
    if idx == 2 and not os.path.exists(f"{LEDGER_PATH}.fixed"):
        os._exit(1)
    record(inv, idx, "end", nonce)
    return {"idx": idx, "pid": os.getpid(), "nonce": nonce}


@poison.handler()
async def run(ctx: Context) -> list[str]:
    """Four steps; the third kills the process until fixed."""
    values = [await ctx.run(f"step{idx}", _step, ctx.invocation_id, idx) for idx in range(4)]
    return [v["nonce"] for v in values]


application = app([poison])
