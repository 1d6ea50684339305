"""durable_core: the durable state machine, written once, over a store seam.

Every durable rule of the proxy lives here (invocation lifecycle, journal appends and
completions, fencing, idempotency, per-key queues and state, workflow run-once and promises,
timers and delayed sends, schedules, deployments' pinned invocations, cancel/kill/pause/resume/purge,
retention). Nothing here does I/O:
the rules run inside a transaction of any `Backend` (LMDB and PostgreSQL in the proxy, the
in-memory `MemoryStore` in tests and `handlers_sdk.testing.LocalRuntime`) and return `Effects`
for the shell to carry out. See docs/architecture.md.
"""

from __future__ import annotations

from durable_core.effects import Effects
from durable_core.lifecycle import AttemptFailure
from durable_core.machine import Limits, Machine
from durable_core.memory import MemoryStore
from durable_core.txn import DBS, Backend, ReadTxn, Txn

__all__ = [
    "DBS",
    "AttemptFailure",
    "Backend",
    "Effects",
    "Limits",
    "Machine",
    "MemoryStore",
    "ReadTxn",
    "Txn",
    "__version__",
]

__version__ = "0.1.0"
