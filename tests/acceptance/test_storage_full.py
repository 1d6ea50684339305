"""Failure matrix #18 and #19: the LMDB map or the disk fills up. Writes fail with 507 (only those
that do not fit), reads keep working, nothing acknowledged is lost, and writes resume once there is
room again (a larger map after a restart, or the disk limit lifted while running)."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Cluster, ProxyProc, fsize_limit

pytestmark = pytest.mark.acceptance


async def _fill(proxy: ProxyProc, size: int, rounds: int, per_round: int = 8) -> tuple[list[str], list[Any]]:
    """Send batches of concurrent /send calls with `size`-byte bodies until one gets 507 (or `rounds` end).

    Returns the ids of every 202 and the bodies of every 507.
    """
    accepted: list[str] = []
    refused: list[Any] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for round_no in range(rounds):
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{proxy.ingress}/Ledger/run/send",
                        json={"steps": 1, "tag": f"r{round_no}-{n}-" + "x" * size},
                    )
                    for n in range(per_round)
                )
            )
            for response in responses:
                if response.status_code == 202:
                    accepted.append(response.json()["invocationId"])
                else:
                    assert response.status_code == 507, (response.status_code, response.text)
                    refused.append(response.json())
            if refused:
                break
    return accepted, refused


def test_map_full_gives_507_and_a_larger_map_continues(cluster: Cluster) -> None:
    """#18: a 512 KiB map that may not grow: 507 JSON, accepted invocations all kept; restarted with a
    larger map, every accepted invocation completes and new ones are accepted."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_MAP_SIZE": "512KiB", "PROXY_MAX_MAP_SIZE": "512KiB"})
    accepted, refused = asyncio.run(_fill(proxy, 16_000, rounds=40))
    assert refused, "the map never filled up"
    assert accepted
    assert all(body["error"] == "storage_full" and body["code"] == 507 for body in refused)
    # Reads still work, and every acknowledged invocation is there.
    for inv in accepted:
        assert proxy.invocation(inv)["id"] == inv
    assert proxy.alive

    proxy.kill()
    proxy.restart(env={"PROXY_MAP_SIZE": "64MiB", "PROXY_MAX_MAP_SIZE": "64MiB"}, services=["Ledger"])
    for inv in accepted:
        assert proxy.attach(inv).status_code == 200
        # No committed step ran again. A step may have started more than once: its ack refused
        # with 507 while the map was full, or in flight at the SIGKILL, was never committed.
        cluster.ledger.check_journal(inv, proxy.invocation(inv)["journal"])
        assert sorted(cluster.ledger.start_counts(inv)) == [0]
    assert proxy.send("Ledger/run", {"steps": 1})


def test_map_grows_up_to_its_maximum(cluster: Cluster) -> None:
    """#18 (auto-grow): a 256 KiB map with room to grow to 16 MiB takes 2 MB of invocations."""
    handler = cluster.handler()
    proxy = cluster.proxy([handler], env={"PROXY_MAP_SIZE": "256KiB", "PROXY_MAX_MAP_SIZE": "16MiB"})
    before = proxy.stats()["storage"]["map_size"]
    accepted, refused = asyncio.run(_fill(proxy, 16_000, rounds=16))
    assert not refused and len(accepted) == 128
    after = proxy.stats()["storage"]["map_size"]
    assert before == 256 * 1024 and after > before
    for inv in accepted:
        assert proxy.attach(inv).status_code == 200
    # The grown map survives a restart that asks for the small size again.
    proxy.kill()
    proxy.restart(services=["Ledger"])
    assert all(proxy.output(inv).status_code == 200 for inv in accepted)
    assert proxy.send("Ledger/run", {"steps": 1})


def test_disk_full_fails_writes_keeps_reads_and_recovers(cluster: Cluster) -> None:
    """#19: RLIMIT_FSIZE (SIGXFSZ ignored) stands in for a full disk: writes fail with 507, reads
    work, nothing acknowledged is lost, and writes resume once the limit is lifted."""
    handler = cluster.handler()
    limit = 2 * 1024 * 1024
    proxy = cluster.proxy([handler], preexec_fn=fsize_limit(limit))
    accepted, refused = asyncio.run(_fill(proxy, 16_000, rounds=60))
    assert refused, "the file size limit was never reached"
    assert all(body["code"] == 507 and "write failed" in body["message"] for body in refused), refused[:2]
    assert proxy.alive
    for inv in accepted:
        assert proxy.invocation(inv)["id"] == inv
    # More space: lift the (soft) limit of the running process, as freeing disk space would.
    resource.prlimit(proxy.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for inv in accepted:
        assert proxy.attach(inv).status_code == 200
    late = proxy.call("Ledger/run", {"steps": 1, "tag": "after"})
    assert late.status_code == 200
    # And everything acknowledged is still there after a restart without any limit.
    proxy.kill()
    proxy.preexec_fn = None
    proxy.restart(services=["Ledger"])
    assert all(proxy.output(inv).status_code == 200 for inv in accepted)
