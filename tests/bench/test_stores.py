"""The store comparison's pure parts (``python -m bench --stores``): CPU accounting from a fake /proc,
the split check, the log filters and the table. No process is started; the end-to-end run is
``python -m bench --size tiny --stores`` (see bench/stores.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.cluster import machine_seconds, owned_partitions, parse_stat, split_problems, tree_cpu_seconds
from bench.stores import CpuSample, cpu_figures, log_problems, log_warnings, postgres_log_summary, take_sample
from bench.stores_report import pg_lmdb_ratio, stores_checks, stores_table

TICK = 100


def _stat(pid: int, name: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    return f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 5"


def _fake_proc(root: Path, stats: dict[int, str], busy: int = 1000, idle: int = 3000) -> Path:
    root.mkdir(parents=True)
    for pid, line in stats.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(line + "\n")
    (root / "self").mkdir()  # not a pid: skipped
    (root / "4242").mkdir()  # a process gone between listing and reading: skipped
    # cpu user nice system idle iowait irq softirq steal
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    return root


def test_parse_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    stat = parse_stat(_stat(77, "postgres: proxy bench 127.0.0.1(5555) idle", 70, 250, 50, 30, 20), tick=TICK)
    assert (stat.pid, stat.ppid) == (77, 70)
    assert stat.own == pytest.approx(3.0) and stat.reaped == pytest.approx(0.5)


def test_tree_cpu_counts_the_root_its_descendants_and_reaped_children(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path / "proc",
        {
            100: _stat(100, "postgres", 1, 100, 100, cutime=50, cstime=50),  # 3 s, 1 s of it reaped backends
            101: _stat(101, "postgres: checkpointer", 100, 10, 10),
            102: _stat(102, "postgres: proxy bench", 100, 300, 100),
            103: _stat(103, "child of a backend", 102, 100, 0),
            200: _stat(200, "python -m proxy", 1, 700, 0),
            300: _stat(300, "unrelated", 1, 9999, 9999),
        },
    )
    totals = tree_cpu_seconds([100, 200, 999], proc, tick=TICK)
    assert totals[100] == pytest.approx(3.0 + 0.2 + 4.0 + 1.0)
    assert totals[200] == pytest.approx(7.0)
    assert totals[999] == 0.0  # gone
    assert machine_seconds(proc, tick=TICK) == pytest.approx((10.0, 40.0))


def test_a_backend_that_exits_between_samples_still_counts(tmp_path: Path) -> None:
    before = _fake_proc(
        tmp_path / "before",
        {
            10: _stat(10, "python -m proxy", 1, 100, 0),
            20: _stat(20, "uvicorn", 1, 50, 0),
            30: _stat(30, "postgres", 1, 10, 0),
            31: _stat(31, "postgres: proxy bench", 30, 100, 0),
        },
        busy=1000,
    )
    after = _fake_proc(
        tmp_path / "after",
        {
            10: _stat(10, "python -m proxy", 1, 300, 100),
            20: _stat(20, "uvicorn", 1, 100, 0),
            30: _stat(30, "postgres", 1, 10, 0, cutime=150),  # backend 31 exited and was reaped: 1.5 s
            32: _stat(32, "postgres: proxy bench", 30, 20, 0),  # a new backend
        },
        busy=1900,
    )
    first = take_sample([10], 20, 30, before)
    second = take_sample([10], 20, 30, after)
    assert second.proxies == pytest.approx((4.0,)) and second.postgres == pytest.approx(1.8)
    fake_first = CpuSample(0.0, first.machine_busy, first.proxies, first.handler, first.postgres, 0.0)
    fake_second = CpuSample(2.0, second.machine_busy, second.proxies, second.handler, second.postgres, 0.5)
    cpu = cpu_figures(fake_first, fake_second, units=1000)
    assert cpu["proxies_s"] == pytest.approx([3.0])
    assert cpu["postgres_s"] == pytest.approx(0.7)  # 0.1 + 1.5 reaped + 0.2 now, 0.1 + 1.0 before
    assert cpu["handler_s"] == pytest.approx(0.5)
    assert cpu["ms_per_unit"]["proxies_sum"] == pytest.approx(3.0)
    assert cpu["ms_per_unit"]["postgres"] == pytest.approx(0.7)
    assert cpu["cpus"]["proxies_sum"] == pytest.approx(1.5)
    # 9 busy seconds on the machine, 3 + 0.7 + 0.5 + 0.5 of them ours.
    assert cpu["others_s"] == pytest.approx(9.0 - 4.7)


def test_cpu_figures_without_postgresql_or_units() -> None:
    a = CpuSample(0.0, 0.0, (1.0, 2.0), 0.0, None, 0.0)
    b = CpuSample(1.0, 5.0, (2.0, 2.5), 0.5, None, 0.1)
    cpu = cpu_figures(a, b, units=0)
    assert cpu["postgres_s"] is None and cpu["cpus"]["postgres"] is None
    assert cpu["proxies_sum_s"] == pytest.approx(1.5)
    assert cpu["ms_per_unit"] == {"proxies_sum": None, "proxies": [None, None], "postgres": None, "handler": None}


def test_split_problems() -> None:
    views: dict[str, dict[str, Any]] = {
        "p0": {"owned": [{"partition": 0, "epoch": 1}, {"partition": 1, "epoch": 3}]},
        "p1": {"owned": [{"partition": 2, "epoch": 1}]},
    }
    owned = owned_partitions(views)
    assert owned == {"p0": {0, 1}, "p1": {2}}
    assert split_problems(owned, 3) == []
    assert split_problems(owned, 4) == ["partition 3 owned by nobody"]
    assert split_problems({"p0": {0, 1}, "p1": {1}, "p2": set()}, 2) == [
        "p2 owns nothing",
        "partition 1 owned by ['p0', 'p1']",
    ]


def test_log_filters() -> None:
    log = "\n".join(
        [
            '{"level": "warning", "message": "attempt 1 failed (RuntimeError: simulated crash after the last step"}',
            '{"level": "warning", "message": "slow commit"}',
            '{"level": "error", "message": "lease renewal failed"}',
            "Traceback (most recent call last):",
            "not json at all",
        ]
    )
    assert log_problems(log) == [
        '{"level": "error", "message": "lease renewal failed"}',
        "Traceback (most recent call last):",
    ]
    assert log_warnings(log) == {"?: slow commit": 1}
    pg_log = "\n".join(
        [
            "2026-12-03 00:07:38.435 UTC [9959] ERROR:  could not serialize access due to concurrent update",
            "2026-12-03 00:07:38.435 UTC [9959] STATEMENT:  INSERT INTO meta (key, value) VALUES ($1, $2)",
            "2026-12-03 00:07:38.437 UTC [9959] ERROR:  could not serialize access due to concurrent update",
            "2026-12-03 00:07:38.437 UTC [9959] STATEMENT:  INSERT INTO meta (key, value) VALUES ($1, $2)",
            "2026-12-03 00:07:59.088 UTC [10169] LOG:  unexpected EOF on client connection with an open transaction",
            "2026-12-03 00:08:00.000 UTC [10170] FATAL:  terminating connection due to administrator command",
        ]
    )
    assert postgres_log_summary(pg_log) == {
        "ERROR: could not serialize access due to concurrent update [INSERT INTO meta (key, value) VALUES ($1, $2)]": 2,
        "FATAL: terminating connection due to administrator command": 1,
    }


def _setup(steps_per_s: float, proxies: int, postgres: bool) -> dict[str, Any]:
    a = CpuSample(0.0, 0.0, (0.0,) * proxies, 0.0, 0.0 if postgres else None, 0.0)
    b = CpuSample(1.0, 2.0, (0.3,) * proxies, 0.1, 0.2 if postgres else None, 0.05)
    throughput = {
        "inv_per_s": steps_per_s / 10,
        "steps_per_s": steps_per_s,
        "p50_ms": 12.0,
        "p99_ms": 40.0,
        "n": 100,
        "cpu": cpu_figures(a, b, 1000),
    }
    return {
        "latency_trivial": {"p50_ms": 1.2, "p99_ms": 3.0, "n": 60},
        "latency_10": {"p50_ms": 4.0, "p99_ms": 9.0, "n": 30},
        "latency_100": {"p50_ms": 31.2, "p99_ms": 60.0, "n": 5},
        "durable_step_ms": 0.3,
        **{f"throughput_{w}_c{c}": throughput for w in ("trivial", "10") for c in (16, 64)},
        "resume_1000": {"median_ms": 150.0, "all_ms": [150.0]},
        "proxy_rss_mib": [{"rss_mib": 70.0, "peak_mib": 72.0, "anon_mib": 50.0, "file_mib": 20.0}] * proxies,
        "log_problems": {},
    }


def _result(figures: dict[str, Any]) -> dict[str, Any]:
    env = {"git": "abc", "cpus": 2, "transport": "aiohttp", "handler": "one handler", "load": "round-robin"}
    return {"size": "tiny", "started": "2026-12-03T00:00:00Z", "environment": env, "figures": figures}


def test_the_table_has_every_setup_the_ratio_and_the_failover() -> None:
    failover = {
        "lease_time_s": 5.0, "target_s": 6.0, "partitions": 16, "victim": "failover_p1",
        "victim_partitions": [0, 1, 2, 3, 4, 5], "trickle_per_s": 40.0, "step_ms_first_attempt": 50,
        "accepted": 300, "refused": {"before_kill": 0, "after_kill": 1}, "first_refusal": "", "victim_owned": 100,
        "in_flight_at_kill": 7, "never_completed": [], "takeover_s": 5.1, "failover_s": 5.3,
        "last_in_flight_s": 5.5, "first_victim_owned_s": 5.3, "log_problems": {"failover_p0": ['{"level": "error"}']},
    }  # fmt: skip
    figures = {
        "setups": {
            "lmdb_1": _setup(5000.0, 1, False),
            "pg_1": _setup(2600.0, 1, True),
            "pg_2": _setup(3000.0, 2, True),
            "pg_3": _setup(3100.0, 3, True),
        },
        "skipped": {},
        "failover": failover,
        "postgres_log": {"ERROR: could not serialize access due to concurrent update": 3},
    }
    text = stores_table(_result(figures))
    lines = text.splitlines()
    assert lines[0].startswith("durable-proxy store comparison, size=tiny")
    header = [cell.strip() for cell in lines[1].split("|")]
    assert header == ["workload", "LMDB x1", "PostgreSQL x1", "PostgreSQL x2", "PostgreSQL x3"]
    for row in (
        "10-step latency c=1, p50 / p99",
        "one durable step c=1",
        "trivial c=64 invocations/s (p50)",
        "10-step c=64 steps/s (p50)",
        "CPU ms per step, 10-step c=64: proxies (sum)",
        "  each proxy",
        "  PostgreSQL (all its processes)",
    ):
        assert any(line.startswith(row) for line in lines), f"no row {row!r} in:\n{text}"
    (each,) = [line for line in lines if line.startswith("  each proxy")][:1]
    assert "0.300 / 0.300 / 0.300" in each  # 0.3 s over 1,000 steps, for each of three proxies
    (pg_row,) = [line for line in lines if line.startswith("  PostgreSQL")][:1]
    assert pg_row.split("|")[1].strip() == "n/a" and pg_row.split("|")[2].strip() == "0.200"
    assert "PostgreSQL x1 / LMDB x1, 10-step steps/s at c=64: 0.52 (target >= 0.50: ok)" in text
    assert "kill -> first completion on a survivor of an invocation the killed proxy owned: 5.30 s" in text
    assert "(target < 6 s: ok)" in text
    assert "proxy log failover/failover_p0: 1 error lines" in text
    assert "3 x ERROR: could not serialize access" in text
    assert pg_lmdb_ratio(figures) == pytest.approx(0.52)
    assert dict(stores_checks(figures)) == {
        "PostgreSQL x1 >= 50% of LMDB, 10-step steps/s at c=64": True,
        "failover < lease time + 1 s (6 s)": True,
    }
    failover["failover_s"] = None
    assert dict(stores_checks(figures))["failover < lease time + 1 s (6 s)"] is False
    assert "no invocation of the victim completed" in stores_table(_result(figures))


def test_the_table_without_postgresql_says_why() -> None:
    figures = {
        "setups": {"lmdb_1": _setup(5000.0, 1, False)},
        "skipped": {"pg_1": "PostgreSQL is not installed", "pg_2": "PostgreSQL is not installed"},
    }
    text = stores_table(_result(figures))
    assert [cell.strip() for cell in text.splitlines()[1].split("|")] == ["workload", "LMDB x1"]
    assert "PostgreSQL x1 skipped: PostgreSQL is not installed" in text
    assert "/ LMDB x1" not in text and stores_checks(figures) == []
