# mypy: ignore-errors
"""The benchmark's handlers on the Restate Python SDK (``python -m bench --peers`` only).

Runs in its own venv (``restate-sdk`` + hypercorn, set up by bench/peers.py under the cache dir),
never in the project's: mypy cannot see ``restate`` from here, hence the ignore above. The same
handlers as bench/handlers.py: ``Bench/trivial`` returns its input, ``Bench/steps`` runs `n`
sequential ``ctx.run`` steps of the same cheap coroutine.
"""

from __future__ import annotations

from typing import Any

import restate

bench = restate.Service("Bench")


async def step(i: int) -> int:
    """The body of one benchmark step, as in bench/handlers.py."""
    return i


@bench.handler()
async def trivial(ctx: restate.Context, value: Any) -> Any:
    """No steps: measures the invocation round trip alone."""
    return value


@bench.handler()
async def steps(ctx: restate.Context, n: int) -> int:
    """`n` sequential durable steps."""
    total = 0
    for i in range(n):
        total += await ctx.run_typed("s", step, restate.RunOptions(), i)
    return total


app = restate.app([bench])
