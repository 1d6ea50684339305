"""`LocalRuntime.state` and `LocalRuntime.promises`: mappings read from the runtime's store.

The store keys state and promises by a hash of (service, key), so the views list the keys the
runtime has seen (of the keyed invocations it ran, and of the state and promises a test set).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from durable_core.machine import Machine
from durable_core.memory import MemoryStore
from handlers_sdk.protocol import Failure

__all__ = ["PromiseKey", "PromisesView", "ServiceKey", "StateView"]

#: (service, key) of a virtual object or workflow.
ServiceKey = tuple[str, str]
#: (workflow, key, promise name).
PromiseKey = tuple[str, str, str]


class StateView(MutableMapping[ServiceKey, dict[str, bytes]]):
    """State of virtual objects and workflows: ``view[(service, key)]`` is ``{name: JSON value}``.

    A key without state is absent. Assigning replaces the whole state of a key (and deleting
    clears it), as the proxy's admin API edit does (`Machine.replace_state`); the next invocation
    of the key gets it as its eager state.
    """

    def __init__(self, store: MemoryStore, machine: Machine, known: set[ServiceKey]) -> None:
        self._store = store
        self._machine = machine
        self._known = known

    def __getitem__(self, item: ServiceKey) -> dict[str, bytes]:
        service, key = item
        with self._store.read() as txn:
            state = self._machine.state(txn, service, key)
        if not state:
            raise KeyError(item)
        return state

    def __setitem__(self, item: ServiceKey, state: dict[str, bytes]) -> None:
        self._replace(item, state)

    def __delitem__(self, item: ServiceKey) -> None:
        if item not in self:
            raise KeyError(item)
        self._replace(item, {})

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter([item for item in sorted(self._known) if item in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _replace(self, item: ServiceKey, state: dict[str, bytes]) -> None:
        service, key = item
        txn = self._store.begin()
        try:
            self._machine.replace_state(txn, service, key, dict(state))
        except BaseException:
            txn.abort()
            raise
        txn.commit()
        self._known.add(item)


class PromisesView(Mapping[PromiseKey, tuple[bytes, Failure | None]]):
    """Durable promises of workflows: ``view[(workflow, key, name)]`` is ``(JSON value, rejection)``
    once the promise is resolved (rejection None) or rejected (value ``null``)."""

    def __init__(self, store: MemoryStore, machine: Machine, known: set[ServiceKey]) -> None:
        self._store = store
        self._machine = machine
        self._known = known

    def __getitem__(self, item: PromiseKey) -> tuple[bytes, Failure | None]:
        workflow, key, name = item
        with self._store.read() as txn:
            promises = self._machine.promises(txn, workflow, key)
        for promise in promises:
            if promise.name == name and promise.completed:
                return (promise.value if promise.value is not None else b"null"), promise.failure
        raise KeyError(item)

    def __iter__(self) -> Iterator[PromiseKey]:
        found: list[PromiseKey] = []
        with self._store.read() as txn:
            for workflow, key in sorted(self._known):
                found += [(workflow, key, p.name) for p in self._machine.promises(txn, workflow, key) if p.completed]
        return iter(found)

    def __len__(self) -> int:
        return sum(1 for _ in self)
