"""Failure matrix #4, #6-#11, #13: the handler service crashes, errs, hangs, is down, is poisoned,
or answers too much; the proxy retries with bounded backoff, pauses visibly, and leaks nothing."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.workload import Workload, check_history
from tests.e2e.harness import Cluster, HandlerProc, poll

pytestmark = pytest.mark.acceptance


def _requests(log: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in log.read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_handler_sigkill_mid_step_under_load(cluster: Cluster) -> None:
    """#4: HANDLER_FAULTS=step2.after_body kills the handler once while 8 clients run 4-step ops;
    after a restart every op completes, acked steps never re-ran, and the crash added <= 1 start."""
    job = {"steps": 4, "sleep": 0.02}
    handler = cluster.handler(env={"HANDLER_FAULTS": "step2.after_body"})
    proxy = cluster.proxy([handler])
    load = Workload(proxy, cluster.history, concurrency=8, job=job, seed=cluster.seed)
    with load.running():
        assert handler.wait(20) == -signal.SIGKILL
        handler.start()
        handler.wait_ready()
        poll(lambda: len(cluster.history.by_outcome("ok")) >= 30, 20, message="30 ok ops")
    counts = check_history(cluster, proxy, job, crashes=1)
    assert counts["fail"] == 0 and counts["unknown"] == 0  # handler crashes are invisible to clients
    # Exactly one step execution was lost with the process: the one that had just ended.
    total_extra = sum(n - 1 for inv in cluster.ledger.invocations() for n in cluster.ledger.start_counts(inv).values())
    assert 1 <= total_extra <= 8, total_extra  # <= 1 per invocation in flight at the kill


def test_retry_after_is_honoured(cluster: Cluster) -> None:
    """#7: a 503 with ``Retry-After: 1`` delays the next attempt by >= 1 s (backoff alone is 100 ms)."""
    log = cluster.tmp_path / "invokes.jsonl"
    handler = cluster.handler(
        "tests.handlers.misbehave:application",
        env={"MISBEHAVE_MODE": "retry-after", "MISBEHAVE_TIMES": "2", "MISBEHAVE_LOG": str(log),
             "MISBEHAVE_RETRY_AFTER": "1"},
    )  # fmt: skip
    proxy = cluster.proxy([handler])
    response = proxy.call("Ledger/run", {"steps": 1})
    assert response.status_code == 200, response.text
    times = [r["t"] for r in _requests(log)]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.98 for gap in gaps), gaps
    assert proxy.invocation(response.headers["x-restate-id"])["last_failure"]["code"] == 503


@pytest.mark.parametrize("mode", ["hang", "drip"])
def test_hanging_or_dripping_handler_times_out_without_leaks(cluster: Cluster, mode: str) -> None:
    """#9: every attempt is cut at the inactivity timeout and retried; after the retry limit the
    invocation pauses, and the proxy holds no attempt, task or extra file descriptor."""
    log = cluster.tmp_path / "invokes.jsonl"
    handler = cluster.handler(
        "tests.handlers.misbehave:application", env={"MISBEHAVE_MODE": mode, "MISBEHAVE_LOG": str(log)}
    )
    proxy = cluster.proxy([handler], env={"PROXY_INACTIVITY_TIMEOUT": "700ms", "PROXY_RETRY_MAX_ATTEMPTS": "4"})
    proxy.call("Ledger/nope")  # warm up the client pools (a 404) before counting fds
    fds_before = proxy.fd_count()
    invs = [proxy.send("Ledger/run", {"steps": 1}) for _ in range(3)]
    for inv in invs:
        view = proxy.wait_status(inv, "paused", timeout=20)
        assert view["retry_count"] == 4 and view["last_failure"]["code"] == 408, view["last_failure"]
    requests = _requests(log)
    assert len(requests) == 12
    by_inv: dict[str, list[float]] = {}
    for r in requests:
        by_inv.setdefault(r["invocation_id"], []).append(r["t"])
    for times in by_inv.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.7 for gap in gaps), gaps  # each attempt lived the full timeout
    assert proxy.stats()["running_attempts"] == 0
    # Abandoned connections are closed, not kept: the fd count returns to where it was.
    poll(lambda: proxy.fd_count() <= fds_before + 1, 5, message=lambda: f"fds {proxy.fd_count()} > {fds_before}")
    assert proxy.alive


def test_handler_down_is_retried_with_capped_backoff_and_little_cpu(cluster: Cluster) -> None:
    """#10: connection refused for 3 s: capped backoff (500 ms), low CPU, completes once it is back."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_RETRY_MAX_INTERVAL": "500ms", "PROXY_RETRY_MAX_ATTEMPTS": "0"})
    handler.kill()
    cpu_before = proxy.cpu_seconds()
    invs = [proxy.send("Ledger/run", {"steps": 2}) for _ in range(20)]
    time.sleep(3.0)  # the outage
    cpu_used = proxy.cpu_seconds() - cpu_before
    print(f"proxy CPU during the outage: {cpu_used:.3f}s")
    views = [proxy.invocation(inv) for inv in invs]
    assert all(v["status"] in ("backing-off", "running") for v in views)
    # 100, 200, 400, then 500 ms capped (+-10 %): about 8 attempts in 3 s, not hundreds.
    assert all(3 <= v["retry_count"] <= 10 for v in views), [v["retry_count"] for v in views]
    assert cpu_used < 1.0, f"the proxy burned {cpu_used:.2f}s of CPU retrying a dead handler"
    handler.start()
    handler.wait_ready()
    for inv in invs:
        assert proxy.attach(inv).status_code == 200
        assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}


class _Supervisor:
    """Restarts a handler whenever it dies (what systemd or Kubernetes would do)."""

    def __init__(self, handler: HandlerProc) -> None:
        self.handler = handler
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.handler.alive:
                self.handler.start()
                self.restarts += 1
            time.sleep(0.05)

    def __enter__(self) -> _Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_poison_handler_is_paused_after_bounded_attempts_and_resumes_after_a_fix(cluster: Cluster) -> None:
    """#11: the process dies at step 2 on every attempt: bounded attempts, then paused; the steps
    before it ran once. Once fixed, an admin resume completes it from the journal."""
    handler = cluster.handler("tests.handlers.poison:application")
    proxy = cluster.proxy([handler], services=["Poison"], env={"PROXY_RETRY_MAX_ATTEMPTS": "4"})
    with _Supervisor(handler) as supervisor:
        inv = proxy.send("Poison/run")
        view = proxy.wait_status(inv, "paused", timeout=30)
    assert view["retry_count"] == 4
    assert [item["entry"]["name"] for item in view["journal"]] == ["step0", "step1"]
    counts = cluster.ledger.start_counts(inv)
    assert counts[0] == 1 and counts[1] == 1
    assert 1 <= counts[2] <= 4, counts  # attempts that found the handler down never reached it
    assert handler.starts >= counts[2] and supervisor.restarts >= counts[2] - 1  # one death per reach
    assert proxy.output(inv).status_code == 470

    # The fix ships; an operator resumes the invocation.
    (cluster.ledger.path.parent / f"{cluster.ledger.path.name}.fixed").touch()
    if not handler.alive:
        handler.start()
    handler.wait_ready()
    resumed = proxy.http.patch(f"{proxy.admin}/invocations/{inv}/resume")
    assert resumed.status_code == 200, resumed.text
    result = proxy.attach(inv)
    assert result.status_code == 200, result.text
    done = proxy.invocation(inv)
    assert result.json() == [item["entry"]["value"]["nonce"] for item in done["journal"]]
    after = cluster.ledger.start_counts(inv)
    assert after == {0: 1, 1: 1, 2: counts[2] + 1, 3: 1}, after
    cluster.ledger.check_journal(inv, done["journal"])


def test_response_over_cap_pauses_at_once(cluster: Cluster) -> None:
    """#13 (response): a handler answer over max_response_bytes pauses the invocation on its first
    attempt (re-running the handler would give the same answer), saying why; resume after a fix."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_MAX_RESPONSE_BYTES": "256KiB", "PROXY_RETRY_MAX_ATTEMPTS": "5"})
    inv = proxy.send("Ledger/big_result", 1024 * 1024)
    view = proxy.wait_status(inv, "paused", timeout=20)
    assert view["attempt"] == 1 and view["retry_count"] == 1, view
    assert view["last_failure"]["code"] == 413, view["last_failure"]
    assert "larger than" in view["last_failure"]["message"], view["last_failure"]
    assert proxy.alive
    small = proxy.call("Ledger/big_result", 1000)
    assert small.status_code == 200 and len(small.json()) == 1000


def test_step_result_over_cap_fails_the_step_terminally(cluster: Cluster) -> None:
    """#13 (entry): a step result over max_entry_bytes is refused with 413 and the SDK fails the
    step terminally (journaled as a failure), so the invocation fails with 413 and is not retried."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_MAX_ENTRY_BYTES": "64KiB"})
    response = proxy.call("Ledger/big_step", 200_000)
    assert response.status_code == 413, response.text
    assert response.headers["x-restate-error-source"] == "invocation"
    view = proxy.invocation(response.headers["x-restate-id"])
    assert view["status"] == "completed" and view["retry_count"] == 0
    (entry,) = [item["entry"] for item in view["journal"]]
    assert entry["failure"]["code"] == 413
    ok = proxy.call("Ledger/big_step", 1000)
    assert ok.status_code == 200 and ok.json() == 1000
