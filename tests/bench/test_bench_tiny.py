"""The benchmark runs end to end at its tiny size (real proxy, real handler service, aiohttp client).

Not a timed test: it proves `make bench` works and every figure of the table is produced, not
that this machine meets the targets (that depends on the machine and whatever else runs on it).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bench_tiny_prints_one_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("durable-proxy benchmark, size=tiny")
    for row in (
        "trivial latency c=1",
        "10-step latency c=1",
        "100-step latency c=1",
        "one durable step",
        "trivial c=64 invocations/s",
        "10-step c=64 steps/s",
        "cost curve: 10 / 100 / 1,000 steps",
        "resume 1,000-step journal after crash",
        "proxy RSS after the run",
        "proxy RSS, ",  # ... N suspended invocations (or n/a before ctx.sleep existed)
    ):
        assert any(line.startswith(row) for line in lines), f"no row {row!r} in:\n{proc.stdout}"
    assert any("suspended invocations" in line for line in lines), proc.stdout

    result = json.loads(out.read_text())
    figures = result["figures"]
    for workload in ("trivial", "10", "100"):
        for side in ("proxy", "floor"):
            latency = figures[f"latency_{workload}"][side]
            assert latency["n"] > 0 and 0 < latency["p50_ms"] <= latency["p99_ms"]
    for key in ("throughput_trivial_c16", "throughput_trivial_c64", "throughput_10_c16", "throughput_10_c64"):
        assert figures[key]["proxy"]["inv_per_s"] > 0 and figures[key]["floor"]["inv_per_s"] > 0
    ten = figures["throughput_10_c64"]["proxy"]
    assert ten["steps_per_s"] == 10 * ten["inv_per_s"]
    assert figures["cost_1000"]["median_ms"] > 0
    assert all(math.isfinite(t) and t > 0 for t in figures["resume_1000"]["all_ms"])
    assert figures["proxy_rss"]["rss_mib"] > 0
    assert set(result["checks"]) >= {"one durable step <= 0.5 ms at c=1", "trivial >= 2,000 inv/s at c=64"}
