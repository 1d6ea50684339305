"""The bound on mapped LMDB pages in a real proxy process (``--resident-map-limit``).

The proxy's share of the data file in its RSS stays near the limit while invocations run, and a
SIGKILL while pages are being dropped loses nothing: every result reads back unchanged, and no
committed step runs again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from proxy.engine.residency import parse_smaps
from tests.e2e.harness import Cluster, ProxyProc, poll

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")]

LIMIT = 256 * 1024
ENV = {"PROXY_RESIDENT_MAP_LIMIT": "256KiB", "PROXY_RESIDENT_CHECK_INTERVAL": "50ms"}
BLOB = 16_000
STEPS = 30


def data_file_mapped(proxy: ProxyProc) -> int:
    """Bytes of the proxy's data file in its RSS, read from /proc/<pid>/smaps."""
    path = os.path.realpath(proxy.data_dir / "lmdb" / "data.mdb")
    return sum(region.rss_bytes for region in parse_smaps(Path(f"/proc/{proxy.pid}/smaps").read_text(), path))


def drops(proxy: ProxyProc) -> int:
    """``durable_lmdb_map_drops_total`` of the running proxy."""
    text = proxy.http.get(proxy.admin + "/metrics").text
    match = re.search(r"^durable_lmdb_map_drops_total (\d+)", text, re.MULTILINE)
    assert match, "the drop counter is missing from /metrics"
    return int(match.group(1))


def test_mapped_pages_stay_bounded_and_a_sigkill_mid_run_loses_nothing(cluster: Cluster) -> None:
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env=ENV)
    blobs = [proxy.send("Ledger/big_step", BLOB) for _ in range(80)]
    for inv in blobs:
        proxy.wait_status(inv, "completed")
    data_size = (proxy.data_dir / "lmdb" / "data.mdb").stat().st_size
    assert data_size > 4 * LIMIT, f"the data file ({data_size} bytes) must be well over the limit"
    poll(lambda: drops(proxy) >= 1, 10, message="mapped pages dropped at least once")
    poll(lambda: data_file_mapped(proxy) <= LIMIT, 10, message=lambda: f"mapped {data_file_mapped(proxy)} bytes")

    runs = [proxy.send("Ledger/run", {"steps": STEPS, "sleep": 0.02, "tag": f"run-{i}"}) for i in range(4)]
    # Reading every blob back while the runs journal steps maps the whole file again and again.
    for inv in blobs:
        assert proxy.output(inv).json() == BLOB
    poll(lambda: len(proxy.invocation(runs[0])["journal"]) >= STEPS // 3, 20, message="a third of run 0 journaled")
    dropped_before_kill = drops(proxy)
    assert dropped_before_kill >= 2
    proxy.kill()

    proxy.restart(services=["Ledger"])
    for inv in runs:
        done = proxy.wait_status(inv, "completed", timeout=60)
        assert len(done["journal"]) == STEPS
        nonces = [item["entry"]["value"]["nonce"] for item in done["journal"]]
        assert proxy.attach(inv).json()["nonces"] == nonces
        cluster.ledger.check_journal(inv, done["journal"])
        cluster.ledger.check_extra_starts(inv, crashes=1, steps=STEPS)
    for inv in blobs:
        assert proxy.output(inv).json() == BLOB
    poll(lambda: drops(proxy) >= 1, 10, message="the restarted proxy drops mapped pages too")
    poll(lambda: data_file_mapped(proxy) <= LIMIT, 10, message=lambda: f"mapped {data_file_mapped(proxy)} bytes")
