"""Failure matrix #20: the proxy's wall clock jumps an hour forward, then back. Timers that fall due
in the jump fire once; timers not yet due keep waiting; moving back never re-fires a fired timer.

The proxy runs under `tests.handlers.clock_proxy`, which shifts ``SystemClock.now_ms`` by the
milliseconds in a file (the proxy itself has no clock-offset setting); monotonic time is untouched.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import Cluster, poll

pytestmark = pytest.mark.acceptance

HOUR_MS = 3_600_000


def test_wall_clock_jumps_fire_due_timers_once(cluster: Cluster) -> None:
    offset = cluster.tmp_path / "clock-offset"
    offset.write_text("0")
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"CLOCK_OFFSET_FILE": str(offset)}, start=False)
    assert proxy.argv[1:3] == ["-m", "proxy"]
    proxy.argv[1:3] = ["-m", "tests.handlers.clock_proxy"]
    proxy.start()
    proxy.wait_ready(["Ledger"])

    half_hour = proxy.send("Ledger/sleepy", {"sleep": 1800, "tag": "30m"})
    two_hours = proxy.send("Ledger/sleepy", {"sleep": 7200, "tag": "2h"})
    delayed = proxy.call("Ledger/run/send?delay=30m", {"steps": 1, "tag": "delayed"})
    assert delayed.status_code == 202, delayed.text
    delayed_id = delayed.json()["invocationId"]
    proxy.wait_status(half_hour, "suspended")
    proxy.wait_status(two_hours, "suspended")
    assert proxy.invocation(delayed_id)["status"] == "scheduled"

    # +1 h: the 30-minute sleep and the 30-minute delayed send are due now; the 2-hour sleep is not.
    offset.write_text(str(HOUR_MS))
    assert proxy.attach(half_hour, timeout=15).json()["tag"] == "30m"
    assert proxy.attach(delayed_id, timeout=15).json()["tag"] == "delayed"
    assert proxy.invocation(two_hours)["status"] == "suspended"
    assert cluster.ledger.start_counts(half_hour) == {0: 1, 1: 1}
    assert cluster.ledger.start_counts(delayed_id) == {0: 1}
    fired = proxy.invocation(half_hour)["journal"]

    # Back to the real time (-1 h): nothing fired re-fires, nothing waiting fires early.
    offset.write_text("0")
    short = proxy.send("Ledger/sleepy", {"sleep": 0.5, "tag": "short"})
    assert proxy.attach(short, timeout=15).status_code == 200  # the timer loop is alive after the jump
    with pytest.raises(AssertionError):
        poll(lambda: proxy.invocation(two_hours)["status"] != "suspended", 1.5)
    assert proxy.invocation(half_hour)["journal"] == fired
    assert cluster.ledger.start_counts(half_hour) == {0: 1, 1: 1}
    assert cluster.ledger.start_counts(delayed_id) == {0: 1}

    # +3 h: the 2-hour sleep fires, once; the earlier ones stay as they were.
    offset.write_text(str(3 * HOUR_MS))
    assert proxy.attach(two_hours, timeout=15).json()["tag"] == "2h"
    assert cluster.ledger.start_counts(two_hours) == {0: 1, 1: 1}
    assert cluster.ledger.start_counts(half_hour) == {0: 1, 1: 1}
    for inv in (half_hour, two_hours, short):
        cluster.ledger.check_journal(inv, proxy.invocation(inv)["journal"])
