# mypy: ignore-errors
"""The benchmark's handlers on DBOS with SQLite (``python -m bench --peers`` only).

Runs in its own venv (``dbos`` + FastAPI + uvicorn, set up by bench/peers.py under the cache dir),
never in the project's: mypy cannot see ``dbos`` from here, hence the ignore above. Served by
``uvicorn bench.peers_dbos_app:app`` (uvloop, httptools, one worker) like bench/handlers.py.
``POST /Bench/trivial`` runs a workflow with no step that returns its input; ``POST /Bench/steps``
runs a workflow of `n` sequential ``@DBOS.step()`` calls of the same cheap coroutine. The SQLite
file is ``$DBOS_BENCH_DB``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from dbos import DBOS
from fastapi import Body, FastAPI

DBOS(
    config={
        "name": "durable-proxy-bench",
        "system_database_url": f"sqlite:///{os.environ['DBOS_BENCH_DB']}",
        "log_level": "WARNING",
    }
)


@DBOS.step()
async def step(i: int) -> int:
    """The body of one benchmark step, as in bench/handlers.py."""
    return i


@DBOS.workflow()
async def trivial_workflow(value: Any) -> Any:
    """No steps: measures the invocation round trip alone."""
    return value


@DBOS.workflow()
async def steps_workflow(n: int) -> int:
    """`n` sequential durable steps."""
    total = 0
    for i in range(n):
        total += await step(i)
    return total


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    DBOS.launch()
    yield
    DBOS.destroy()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> str:
    return "ok"


@app.post("/Bench/trivial")
async def trivial(value: Annotated[Any, Body()]) -> Any:
    return await trivial_workflow(value)


@app.post("/Bench/steps")
async def steps(n: Annotated[int, Body()]) -> int:
    return await steps_workflow(n)
