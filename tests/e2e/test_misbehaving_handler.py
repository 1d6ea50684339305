"""Issue 2 (c): a handler answering 5xx, garbage or nothing at all is retried with backoff; an attempt
past the inactivity timeout is abandoned, and an ack carrying its token is fenced with 409."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, poll

pytestmark = pytest.mark.e2e


def _requests(log: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in log.read_text().splitlines()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize(
    ("mode", "code"),
    [("500", 500), ("502", 502), ("garbage", 571), ("schema", 571), ("wrongtype", 571), ("truncated", 503)],
)
def test_bad_answers_are_retried_with_backoff_then_complete(cluster: Cluster, mode: str, code: int) -> None:
    log = cluster.tmp_path / "invokes.jsonl"
    handler = cluster.handler(
        "tests.handlers.misbehave:application",
        env={"MISBEHAVE_MODE": mode, "MISBEHAVE_TIMES": "3", "MISBEHAVE_LOG": str(log)},
    )
    proxy = cluster.proxy([handler], env={"PROXY_RETRY_INITIAL_INTERVAL": "200ms", "PROXY_RETRY_MAX_ATTEMPTS": "10"})
    response = proxy.call("Ledger/run", {"steps": 2})
    assert response.status_code == 200, response.text
    inv = response.headers["x-restate-id"]

    requests = _requests(log)
    assert [r["misbehaving"] for r in requests] == [True, True, True, False]
    assert [r["attempt"] for r in requests] == [1, 2, 3, 4]
    assert len({r["token"] for r in requests}) == 4  # every attempt has its own token
    # Backoff 200 ms doubling (±10 % jitter): the gaps grow.
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(requests)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.2 * 2**n * 0.9 - 0.02, f"retry {n + 1} came after {gap:.3f}s: {gaps}"
    view = proxy.invocation(inv)
    assert view["status"] == "completed" and view["retry_count"] == 3
    assert view["last_failure"]["code"] == code, view["last_failure"]
    # The bad answers wrote nothing: the journal holds exactly the two real steps.
    assert [item["entry"]["name"] for item in view["journal"]] == ["step0", "step1"]
    assert cluster.ledger.start_counts(inv) == {0: 1, 1: 1}
    assert proxy.alive


def test_retry_limit_pauses_the_invocation_visibly(cluster: Cluster) -> None:
    log = cluster.tmp_path / "invokes.jsonl"
    handler = cluster.handler(
        "tests.handlers.misbehave:application", env={"MISBEHAVE_MODE": "500", "MISBEHAVE_LOG": str(log)}
    )
    proxy = cluster.proxy([handler], env={"PROXY_RETRY_MAX_ATTEMPTS": "3"})
    inv = proxy.send("Ledger/run", {"steps": 2})
    view = proxy.wait_status(inv, "paused", timeout=20)
    assert view["retry_count"] == 3
    assert view["last_failure"]["code"] == 500 and "HTTP 500" in view["last_failure"]["message"]
    assert view["journal"] == []
    assert len(_requests(log)) == 3
    output = proxy.output(inv)
    assert output.status_code == 470  # not completed, and no result
    # Paused means no more attempts: well past the largest backoff, still three requests.
    with pytest.raises(AssertionError):
        poll(lambda: len(_requests(log)) > 3, 1.5)
    assert proxy.invocation(inv)["status"] == "paused"


def test_hanging_attempt_is_abandoned_and_its_late_ack_fenced(cluster: Cluster) -> None:
    log = cluster.tmp_path / "invokes.jsonl"
    handler = cluster.handler(
        "tests.handlers.misbehave:application",
        env={"MISBEHAVE_MODE": "hang", "MISBEHAVE_TIMES": "2", "MISBEHAVE_LOG": str(log)},
    )
    proxy = cluster.proxy([handler], env={"PROXY_INACTIVITY_TIMEOUT": "2s"})
    inv = proxy.send("Ledger/run", {"steps": 2})

    # Attempt 2 arrives only once attempt 1 was abandoned for inactivity.
    poll(lambda: len(_requests(log)) >= 2, 15, message="a second attempt")
    first, second = _requests(log)[:2]
    assert second["t"] - first["t"] >= 2.0 - 0.05
    assert (first["attempt"], second["attempt"]) == (1, 2) and first["token"] != second["token"]
    counts_before = proxy.counts()

    def ack(request: dict[str, Any], index: int, nonce: str) -> Any:
        value = {"idx": index, "pid": 0, "nonce": nonce}
        return proxy.append(
            {
                "invocation_id": inv,
                "attempt": request["attempt"],
                "token": request["token"],
                "index": index,
                "entry": {"type": "run", "name": f"step{index}", "value": value},
            }
        )

    late = ack(first, 0, "late")
    assert late.status_code == 409, late.text
    assert late.json()["error"] == "fenced"
    assert proxy.counts() == counts_before
    assert proxy.invocation(inv)["journal"] == []
    # The same ack with the current attempt's token is accepted: the 409 was about the token.
    current = ack(second, 0, "injected")
    assert current.status_code == 200, current.text
    again = ack(first, 1, "late")
    assert again.status_code == 409

    response = proxy.attach(inv)
    assert response.status_code == 200, response.text
    # Step 0 was journaled by the accepted ack, so the handler replayed it instead of running it.
    assert response.json()["nonces"][0] == "injected"
    assert cluster.ledger.start_counts(inv) == {1: 1}
    view = proxy.invocation(inv)
    assert view["retry_count"] == 2 and view["last_failure"]["code"] == 408
    assert [r["attempt"] for r in _requests(log)] == [1, 2, 3]
