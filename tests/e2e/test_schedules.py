"""Issue 16 (item 3): schedules against real processes, on LMDB and on PostgreSQL. Two schedules
every second (catch-up skip and once) and one declared in code fire once per fire time, with no
duplicate across a proxy SIGKILL, and after 5 s down each catch-up policy does what the README says."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, poll
from tests.postgres import PgCluster, pg_cluster

__all__ = ["pg_cluster"]

pytestmark = pytest.mark.e2e

APP = "tests.handlers.scheduled:application"
SECOND = 1000
#: The proxy's default schedule grace (--schedule-grace): a fire later than this is "missed".
GRACE_MS = 1000


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fires(path: Path, schedule: str) -> dict[int, set[str]]:
    """Fire time -> the invocation ids that ran for it (retries of one invocation count once)."""
    fires: dict[int, set[str]] = {}
    for line in _lines(path):
        if line["schedule"] == schedule:
            fires.setdefault(line["fire_ms"], set()).add(line["invocation"])
    return fires


def _consecutive(times: list[int]) -> bool:
    return all(b - a == SECOND for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("store", ["lmdb", "postgresql"])
def test_schedules_fire_once_per_second_across_a_sigkill_and_catch_up_as_documented(
    cluster: Cluster, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    if store == "postgresql":
        postgres: PgCluster = request.getfixturevalue("pg_cluster")
        env["PROXY_STORE"] = postgres.fresh_database("schedules")
    ledger = tmp_path / "schedule-ledger.jsonl"
    handler = cluster.handler(APP, env={"SCHEDULE_LEDGER": str(ledger)})
    proxy = cluster.proxy([handler], services=["Tick"], env=env)
    for schedule_id, catch_up in (("every-1s-skip", "skip"), ("every-1s-once", "once")):
        body = {"id": schedule_id, "service": "Tick", "handler": "run", "every": "1s", "catch_up": catch_up}
        created = proxy.http.post(proxy.admin + "/schedules", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["next_fire_ms"] > time.time() * 1000 - GRACE_MS
    listing = {s["id"]: s for s in proxy.http.get(proxy.admin + "/schedules").json()["schedules"]}
    assert set(listing) == {"code:Tick:heartbeat", "every-1s-skip", "every-1s-once"}
    assert listing["code:Tick:heartbeat"]["origin"] == "code" and listing["code:Tick:heartbeat"]["next_fire"]

    ids = ("every-1s-skip", "every-1s-once", "code:Tick:heartbeat")
    poll(lambda: all(len(_fires(ledger, s)) >= 3 for s in ids), 15, message="three fires of each schedule")
    kill_ms = int(time.time() * 1000)
    proxy.kill()
    time.sleep(5)
    restart_ms = int(time.time() * 1000)
    proxy.restart(services=["Tick"])
    up_ms = int(time.time() * 1000)
    poll(
        lambda: all(sum(1 for t in _fires(ledger, s) if t > up_ms) >= 3 for s in ids),
        15, message="three fires of each schedule after the restart",
    )  # fmt: skip
    views = {s: proxy.http.get(f"{proxy.admin}/schedules/{s}").json() for s in ids}

    for schedule_id in ids:
        fires = _fires(ledger, schedule_id)
        doubled = {t: inv for t, inv in fires.items() if len(inv) > 1}
        assert not doubled, f"{schedule_id}: fire times that ran as two invocations: {doubled}"
        before = sorted(t for t in fires if t < kill_ms)
        assert _consecutive(before), f"{schedule_id}: a fire missing before the kill: {before}"
        # After the catch-up, once per second again.
        after = sorted(t for t in fires if t >= up_ms)
        assert _consecutive(after), f"{schedule_id}: not once per second after the restart: {after}"

    # skip: none of the fire times while the proxy was down ran; the schedule counts them.
    skip = sorted(_fires(ledger, "every-1s-skip"))
    down = [t for t in skip if kill_ms + SECOND < t < restart_ms - GRACE_MS]
    assert down == [], f"catch-up skip ran fires missed while down: {down}"
    assert views["every-1s-skip"]["missed"] >= 4, views["every-1s-skip"]
    assert all(line["missed"] == 0 for line in _lines(ledger) if line["schedule"] == "every-1s-skip")

    # once: one invocation stands for all the missed fire times, at the latest of them.
    once = [line for line in _lines(ledger) if line["schedule"] == "every-1s-once"]
    catch_ups = {line["fire_ms"]: line["missed"] for line in once if line["missed"]}
    assert len(catch_ups) == 1, f"catch-up once must run exactly one fire for the missed ones: {catch_ups}"
    [(caught_ms, missed)] = catch_ups.items()
    assert missed >= 5, f"5 s down stands for 5 or more missed fires, not {missed}"
    assert kill_ms < caught_ms <= int(time.time() * 1000)
    once_times = sorted(_fires(ledger, "every-1s-once"))
    gap = [t for t in once_times if kill_ms + SECOND < t < caught_ms]
    assert gap == [], f"catch-up once ran more than one fire for the missed ones: {gap}"
    assert views["every-1s-once"]["missed"] == missed - 1
    assert views["every-1s-once"]["fired"] == len(once_times)
