"""What a concurrency limit costs `Machine.invoke` on the hot path, over the memory store.

Three cases, each the same ingress invocation of a plain service handler (new record, invoke in a
child of a write transaction, commit): the service has no limits (one dict lookup, nothing else);
the service has a limit on another handler (the lookup and a scan of its handler table); the
handler itself has a concurrency limit it never reaches (a state row read and written).

Run: ``.venv/bin/python -m bench.limits_cost`` (prints µs per invocation, best of 5).
"""

from __future__ import annotations

import itertools
import timeit

from durable_core.journal import resolve_in
from durable_core.keys import new_invocation_id
from durable_core.machine import Limits, Machine
from durable_core.memory import MemoryStore
from durable_core.records import ServiceLimits, ServiceRecord
from handlers_sdk.protocol import Limit

__all__ = ["measure"]

_SERVICES = {
    "Greeter": ServiceRecord(name="Greeter", type="service", handlers={"greet": "", "other": ""}, deployment_id="dp")
}
_CASES: dict[str, ServiceLimits | None] = {
    "no limits": None,
    "limit on another handler": ServiceLimits(handlers={"other": Limit(concurrency=2)}),
    "limit on this handler (never full)": ServiceLimits(handlers={"greet": Limit(concurrency=10**9)}),
}


def measure(number: int = 2000, repeat: int = 5) -> dict[str, float]:
    """µs per `Machine.invoke` (best of `repeat` runs of `number`) for each case."""
    results: dict[str, float] = {}
    for name, limits in _CASES.items():
        flow = {"Greeter": limits} if limits is not None else {}
        machine = Machine(Limits(), lambda s, h: resolve_in(_SERVICES, s, h), limits_of=flow.get)
        store = MemoryStore()
        ids = itertools.count(1)

        def invoke(machine: Machine = machine, store: MemoryStore = store, ids: itertools.count[int] = ids) -> None:
            now = 1_700_000_000_000
            record = machine.new_record(
                new_invocation_id(now, next(ids).to_bytes(10, "big")), "Greeter", "greet", "", now=now, random_seed=1
            )
            txn = store.begin()
            child = txn.child()
            machine.invoke(child, record, b"1", now=now)
            child.commit()
            txn.commit()

        best = min(timeit.repeat(invoke, number=number, repeat=repeat))
        results[name] = best / number * 1e6
    return results


if __name__ == "__main__":
    for case, micros in measure().items():
        print(f"{case:40s} {micros:7.2f} µs per invoke")
