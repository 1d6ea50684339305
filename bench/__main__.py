"""``python -m bench [--size tiny|full] [--peers | --stores]``: the benchmark of issue 6. Prints one table, writes JSON.

Starts a real proxy (``python -m proxy`` over a temporary data dir) and a real handler service
(uvicorn, uvloop, httptools, one worker) on free 127.0.0.1 ports, drives them with an aiohttp
client, prints the table and writes every figure to ``bench/results/``. With ``--peers``, the same
workloads also run through Restate and DBOS (set up under ~/.cache/durable-proxy-bench, see
bench/peers.py), as an extra block of the table with the ratios. With ``--stores`` (issue 12), instead:
the workloads on one proxy on LMDB, one on PostgreSQL, and two and three on one PostgreSQL, with the
CPU per step of each process and a failover time (bench/stores.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.report import checks, table
from bench.runner import SIZES, run_benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="tiny: a few seconds; full: ~2 min")
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp", help="proxy->handler client")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait for other processes to go quiet first (default: 60 for full, 0 for tiny)",
    )
    parser.add_argument(
        "--peers", action="store_true", help="also measure Restate and DBOS (installs them in a cache dir)"
    )
    parser.add_argument(
        "--stores",
        action="store_true",
        help="instead: the workloads on LMDB x1 and PostgreSQL x1, x2, x3 (one run), CPU per step, failover",
    )
    parser.add_argument(
        "--lease-time", type=float, default=5.0, help="with --stores: the failover's lease (the proxy's default: 5 s)"
    )
    parser.add_argument("--no-failover", action="store_true", help="with --stores: skip the failover measurement")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file (default bench/results/...)")
    args = parser.parse_args(argv)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (60.0 if args.size == "full" else 0.0)
    if args.stores:
        return _stores(args.size, args.transport, quiet_wait, args.lease_time, not args.no_failover, args.out)
    prepared = None
    if args.peers:
        from bench.peers import prepare

        prepared = prepare()  # installs first, so downloads do not overlap any measurement
    result = run_benchmark(args.size, args.transport, quiet_wait)
    result["checks"] = {name: met for name, met in checks(result["figures"])}
    if prepared is not None:
        from bench.peers import peer_checks, run_peers

        result["peers"] = run_peers(args.size, prepared, min(quiet_wait, 15.0))
        result["checks"].update(peer_checks(result))
    print(table(result))
    _write(result, args.out, f"bench-{args.size}")
    return 0


def _stores(size: str, transport: str, quiet_wait: float, lease_time: float, failover: bool, out: Path | None) -> int:
    """``--stores``: the store comparison of issue 12 (bench/stores.py), its own table and JSON."""
    from bench.stores import run_stores
    from bench.stores_report import stores_checks, stores_table

    result = run_stores(size, transport, quiet_wait, lease_time, failover)
    result["checks"] = {name: met for name, met in stores_checks(result["figures"])}
    _write(result, out, f"stores-{size}")  # first: a table that fails to render loses no figure
    print(stores_table(result))
    return 0


def _write(result: dict[str, Any], out: Path | None, stem: str) -> None:
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2))
    print(f"figures written to {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
