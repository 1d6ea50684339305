"""The table of ``python -m bench --stores``: one column per setup (LMDB x1, PostgreSQL x1/x2/x3),
the CPU milliseconds per step of each process, the PostgreSQL/LMDB ratio and the failover time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LABELS", "ORDER", "stores_checks", "stores_table"]

ORDER = ("lmdb_1", "pg_1", "pg_2", "pg_3")
LABELS = {"lmdb_1": "LMDB x1", "pg_1": "PostgreSQL x1", "pg_2": "PostgreSQL x2", "pg_3": "PostgreSQL x3"}
#: Issue 12: one proxy on PostgreSQL reaches at least this share of LMDB's 10-step steps/s at c=64.
RATIO_TARGET = 0.5


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _cpu_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ok(met: bool) -> str:
    return "ok" if met else "MISS"


def pg_lmdb_ratio(figures: dict[str, Any]) -> float | None:
    """PostgreSQL x1 / LMDB x1 for 10-step steps/s at c=64 (None when either is missing)."""
    setups = figures.get("setups", {})
    if "lmdb_1" not in setups or "pg_1" not in setups:
        return None
    lmdb: float = setups["lmdb_1"]["throughput_10_c64"]["steps_per_s"]
    pg: float = setups["pg_1"]["throughput_10_c64"]["steps_per_s"]
    return pg / lmdb if lmdb else None


def stores_checks(figures: dict[str, Any]) -> list[tuple[str, bool]]:
    """Issue 12's performance goals and whether this run met them (those it could measure)."""
    out: list[tuple[str, bool]] = []
    ratio = pg_lmdb_ratio(figures)
    if ratio is not None:
        out.append(("PostgreSQL x1 >= 50% of LMDB, 10-step steps/s at c=64", ratio >= RATIO_TARGET))
    failover = figures.get("failover")
    if failover is not None:
        took = failover.get("failover_s")
        out.append(
            (
                f"failover < lease time + 1 s ({failover['target_s']:g} s)",
                took is not None and took < failover["target_s"],
            )
        )
    return out


def _rows(figures: dict[str, Any], keys: list[str]) -> list[tuple[str, ...]]:
    setups = figures["setups"]
    rows: list[tuple[str, ...]] = []

    def row(label: str, cell: Callable[..., str]) -> None:
        rows.append((label, *(cell(setups[key]) for key in keys)))

    for workload, label in (("trivial", "trivial"), ("10", "10-step"), ("100", "100-step")):
        row(
            f"{label} latency c=1, p50 / p99",
            lambda f, w=workload: f"{_ms(f[f'latency_{w}']['p50_ms'])} / {_ms(f[f'latency_{w}']['p99_ms'])}",
        )
    row("one durable step c=1", lambda f: _ms(f["durable_step_ms"]))
    for workload, label in (("trivial", "trivial"), ("10", "10-step")):
        for concurrency in (16, 64):
            name = f"throughput_{workload}_c{concurrency}"
            if workload == "trivial":
                row(
                    f"{label} c={concurrency} invocations/s (p50)",
                    lambda f, n=name: f"{f[n]['inv_per_s']:,.0f}/s ({_ms(f[n]['p50_ms'])})",
                )
            else:
                row(
                    f"{label} c={concurrency} steps/s (p50)",
                    lambda f, n=name: f"{f[n]['steps_per_s']:,.0f}/s ({_ms(f[n]['p50_ms'])})",
                )
    row("resume 1,000-step journal after crash", lambda f: _ms(f["resume_1000"]["median_ms"]))
    row(
        "proxy RSS after the run, each (MiB)",
        lambda f: " / ".join(f"{r['rss_mib']:.0f}" for r in f["proxy_rss_mib"]),
    )
    for name, unit in (("throughput_10_c64", "step, 10-step c=64"), ("throughput_trivial_c64", "inv, trivial c=64")):
        row(f"CPU ms per {unit}: proxies (sum)", lambda f, n=name: _cpu_ms(f[n]["cpu"]["ms_per_unit"]["proxies_sum"]))
        row(
            "  each proxy",
            lambda f, n=name: " / ".join(_cpu_ms(v) for v in f[n]["cpu"]["ms_per_unit"]["proxies"]),
        )
        row("  PostgreSQL (all its processes)", lambda f, n=name: _cpu_ms(f[n]["cpu"]["ms_per_unit"]["postgres"]))
        row("  handler service", lambda f, n=name: _cpu_ms(f[n]["cpu"]["ms_per_unit"]["handler"]))
    parts = ("proxies_sum", "postgres", "handler", "load", "others")
    row(
        "CPUs busy, 10-step c=64: proxies/PG/handler/load/other",
        lambda f: "/".join(
            "-" if v is None else f"{v:.2f}" for v in (f["throughput_10_c64"]["cpu"]["cpus"][k] for k in parts)
        ),
    )
    return rows


def _failover_lines(failover: dict[str, Any]) -> list[str]:
    took, target = failover.get("failover_s"), failover["target_s"]
    takeover = failover.get("takeover_s")

    def s(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} s"

    verdict = "MISS (no invocation of the victim completed)" if took is None else _ok(took < target)
    lines = [
        f"failover: 3 proxies on PostgreSQL, lease {failover['lease_time_s']:g} s, {failover['partitions']} "
        f"partitions; SIGKILL {failover['victim']} (owned {len(failover['victim_partitions'])}) under a trickle of "
        f"{failover['trickle_per_s']:g} 10-step invocations/s (round-robin sends, each step "
        f"{failover['step_ms_first_attempt']} ms in the first attempt, instantaneous in a retry)",
        f"  kill -> first completion on a survivor of an invocation the killed proxy owned: {s(took)} "
        f"(target < {target:g} s: {verdict}); last of them {s(failover.get('last_in_flight_s'))}; "
        f"{failover['in_flight_at_kill']} were in flight at the kill",
        f"  survivors own every partition {s(takeover)} after the kill; first completion in a victim partition "
        f"(sent before or after the kill) {s(failover.get('first_victim_owned_s'))}; "
        f"{failover['accepted']} sends accepted, refused {failover['refused']['before_kill']} before / "
        f"{failover['refused']['after_kill']} after the kill"
        + (f" (first: {failover['first_refusal']})" if failover.get("first_refusal") else ""),
    ]  # fmt: skip
    if failover.get("never_completed"):
        lines.append(f"  NEVER COMPLETED: {failover['never_completed']}")
    return lines


def stores_table(result: dict[str, Any]) -> str:
    """Render the comparison (plain text, fixed width)."""
    figures = result["figures"]
    env = result["environment"]
    keys = [key for key in ORDER if key in figures["setups"]]
    header = ("workload", *(LABELS[key] for key in keys))
    rows = _rows(figures, keys) if keys else []
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    title = (
        f"durable-proxy store comparison, size={result['size']}, {result['started']}, git {env['git']}, "
        f"{env['cpus']} CPUs, proxy->handler {env['transport']}, client aiohttp"
    )
    out = [title, line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]
    ratio = pg_lmdb_ratio(figures)
    if ratio is not None:
        out.append(
            f"PostgreSQL x1 / LMDB x1, 10-step steps/s at c=64: {ratio:.2f} "
            f"(target >= {RATIO_TARGET:.2f}: {_ok(ratio >= RATIO_TARGET)})"
        )
    for key, why in figures.get("skipped", {}).items():
        out.append(f"{LABELS.get(key, key)} skipped: {why}")
    if "failover" in figures:
        out.extend(_failover_lines(figures["failover"]))
    problems = {
        f"{key}/{node}": lines
        for key, setup in [*figures["setups"].items(), ("failover", figures.get("failover", {}))]
        for node, lines in setup.get("log_problems", {}).items()
    }
    for where, lines in problems.items():
        out.append(f"proxy log {where}: {len(lines)} error lines, first: {lines[0][:300]}")
    for key, setup in [*figures["setups"].items(), ("failover", figures.get("failover", {}))]:
        for node, counts in setup.get("log_warnings", {}).items():
            top = max(counts.items(), key=lambda i: i[1])
            out.append(f"proxy log {key}/{node}: {sum(counts.values())} warnings, most: {top[1]} x {top[0][:120]}")
    pg_log = figures.get("postgres_log", {})
    if pg_log:
        out.append(f"PostgreSQL log: {sum(pg_log.values())} ERROR/FATAL lines:")
        out.extend(f"  {count} x {message[:200]}" for message, count in sorted(pg_log.items(), key=lambda i: -i[1]))
    out += [
        f"{env['handler']}; load {env['load']}. CPU ms per step = CPU time of the process (PostgreSQL: the",
        "postmaster and every backend, reaped ones included) over the measured window / steps completed in it",
        "(invocations for trivial); the sum of the proxies' and PostgreSQL's figures is what one step costs.",
        "The failover's victim is killed after the split; its sends are not retried (the refusals after the kill).",
    ]
    return "\n".join(out)
