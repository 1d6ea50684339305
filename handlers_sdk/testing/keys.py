"""Per-key exclusivity and run-once workflows for the `LocalRuntime`, kept as the proxy keeps them.

An exclusive handler of a virtual object, and a workflow's run, hold their key until the
invocation completes (a suspended or paused one keeps holding it); the others wait for the key
in arrival order. A workflow's run happens once per key: whoever asks for it later gets the
first run.
"""

from __future__ import annotations

__all__ = ["KeyLocks", "ServiceKey"]

#: (service name, key)
ServiceKey = tuple[str, str]


class KeyLocks:
    """Which invocation holds each key, who waits for it, and each workflow key's run."""

    def __init__(self) -> None:
        self._holders: dict[ServiceKey, str] = {}
        self._queues: dict[ServiceKey, list[str]] = {}
        self._runs: dict[ServiceKey, str] = {}

    def enter(self, key: ServiceKey, invocation_id: str) -> bool:
        """Take `key` for `invocation_id` (True), or queue it behind the holder and earlier arrivals (False)."""
        if self._holders.get(key) == invocation_id:
            return True
        if key not in self._holders and not self._queues.get(key):
            self._holders[key] = invocation_id
            return True
        self._queues.setdefault(key, []).append(invocation_id)
        return False

    def leave(self, key: ServiceKey, invocation_id: str) -> None:
        """`invocation_id` completed: it no longer holds `key` (see `admit`) nor waits for it."""
        if self._holders.get(key) == invocation_id:
            del self._holders[key]
        queue = self._queues.get(key, [])
        if invocation_id in queue:
            queue.remove(invocation_id)

    def admit(self) -> list[str]:
        """Give every free key to the first invocation waiting for it; returns those invocations."""
        admitted: list[str] = []
        for key, queue in self._queues.items():
            if queue and key not in self._holders:
                self._holders[key] = queue.pop(0)
                admitted.append(self._holders[key])
        return admitted

    def holder(self, key: ServiceKey) -> str | None:
        """The invocation holding `key`, if any."""
        return self._holders.get(key)

    def claim_run(self, key: ServiceKey, invocation_id: str) -> str:
        """Make `invocation_id` the run of workflow `key` unless it has one; returns the run's id."""
        return self._runs.setdefault(key, invocation_id)
