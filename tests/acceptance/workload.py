"""Client load with a Jepsen-style history, and the failure-matrix checkers that run on it.

Each op is one ``POST /Ledger/run`` with its own idempotency key (the op's key, also its tag). The
client records what it learned: ``ok`` (a 200 with the result), ``fail`` (definitely no effect:
the connection was refused, or a 4xx/507 answer), or ``unknown`` (anything else: reset, timeout,
503 while the proxy drains).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.e2e.harness import Cluster, History, Op, ProxyProc, poll

__all__ = ["Workload", "check_history"]


def classify(response: httpx.Response) -> str:
    """Outcome of an answered op."""
    if response.status_code == 200:
        return "ok"
    if 400 <= response.status_code < 500 or response.status_code == 507:
        return "fail"
    return "unknown"


class Workload:
    """`concurrency` client threads issuing ops until stopped."""

    def __init__(
        self,
        proxy: ProxyProc,
        history: History,
        concurrency: int,
        job: dict[str, Any],
        seed: int,
        prefix: str = "op",
        path: str = "Ledger/run",
        body: Callable[[str], Any] | None = None,
        pause: float = 0.0,
    ) -> None:
        self.proxy = proxy
        self.history = history
        self.concurrency = concurrency
        self.job = job
        self.prefix = prefix
        self.path = path
        self.body = body or (lambda key: {**job, "tag": key})
        self.pause = pause
        self._stop = threading.Event()
        self._next = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(seed)

    def _key(self) -> str:
        with self._lock:
            self._next += 1
            return f"{self.prefix}-{self._next}"

    def _worker(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(20, connect=1)) as client:
            while not self._stop.is_set():
                key = self._key()
                op = Op(key=key)
                try:
                    response = client.post(
                        f"{self.proxy.ingress}/{self.path}", json=self.body(key), headers={"idempotency-key": key}
                    )
                except httpx.ConnectError as exc:
                    # Refused: the request never reached the proxy.
                    op.outcome, op.error = "fail", repr(exc)
                except httpx.HTTPError as exc:
                    op.outcome, op.error = "unknown", repr(exc)
                else:
                    op.outcome, op.status = classify(response), response.status_code
                    op.inv_id = response.headers.get("x-restate-id")
                    op.body = response.json() if response.status_code == 200 else response.text
                self.history.add(op)
                time.sleep(self.pause if op.outcome == "ok" else max(self.pause, 0.05))

    def start(self) -> None:
        """Start the client threads."""
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._worker, name=f"client-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop issuing ops and wait for the ones in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(40)
            assert not thread.is_alive(), "a client thread is stuck"

    @contextmanager
    def running(self) -> Iterator[Workload]:
        """Run the load for the duration of a with-block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def check_history(cluster: Cluster, proxy: ProxyProc, job: dict[str, Any], crashes: int) -> dict[str, int]:
    """Run the checkers once everything is up again. Returns op counts by outcome.

    * every ``ok`` result is still there, unchanged, under the same invocation id;
    * every ``unknown`` op, retried with its key, completes (at most one invocation per key);
    * no ``fail`` op and no duplicate has an effect: the ledger holds exactly the invocations of
      the ok and unknown ops;
    * per invocation: no journaled step re-ran, and each crash added at most one extra start.
    """
    history = cluster.history
    ok, unknown, fail = history.by_outcome("ok"), history.by_outcome("unknown"), history.by_outcome("fail")
    assert ok, "no op succeeded: the test proves nothing"
    key_to_inv: dict[str, str] = {}
    for op in ok:
        assert op.inv_id is not None
        output = proxy.output(op.inv_id)
        assert output.status_code == 200, (op, output.text)
        assert output.json() == op.body, f"{op.key}: result changed after restart"
        assert op.body["tag"] == op.key
        key_to_inv[op.key] = op.inv_id
    with httpx.Client(timeout=60) as client:
        for op in unknown:
            response = client.post(
                f"{proxy.ingress}/Ledger/run", json={**job, "tag": op.key}, headers={"idempotency-key": op.key}
            )
            assert response.status_code == 200, (op, response.text)
            assert response.json()["tag"] == op.key
            key_to_inv[op.key] = response.headers["x-restate-id"]
    # Invocations only ever come from ok/unknown ops, one per key.
    assert len(set(key_to_inv.values())) == len(key_to_inv), "two keys share an invocation"
    ledger_invs = set(cluster.ledger.invocations())
    expected = set(key_to_inv.values())
    extra = ledger_invs - expected
    assert not extra, f"invocations that no ok/unknown op accounts for (a failed op or a duplicate ran): {extra}"
    assert expected <= ledger_invs, f"ok/unknown ops whose steps never ran: {expected - ledger_invs}"
    # Every expected invocation that started a step is complete and consistent.
    for inv in sorted(ledger_invs):
        view = proxy.wait_status(inv, "completed", timeout=30)
        cluster.ledger.check_journal(inv, view["journal"])
        cluster.ledger.check_extra_starts(inv, crashes=crashes, steps=job["steps"])
    return {"ok": len(ok), "unknown": len(unknown), "fail": len(fail)}


def wait_all_settled(proxy: ProxyProc, timeout: float = 30) -> None:
    """Poll until no attempt is running in the proxy."""
    poll(lambda: proxy.stats()["running_attempts"] == 0, timeout, message="all attempts settled")
