"""Prometheus metrics in text format, without a client library: counters, gauges, histograms."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Histogram", "Metrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Counter:
    """A monotonically increasing count, optionally split by one label."""

    def __init__(self, name: str, help_text: str, label: str = "") -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.values: dict[str, float] = {}

    def inc(self, value: str = "", amount: float = 1.0) -> None:
        """Add `amount` to the series labelled `value`."""
        self.values[value] = self.values.get(value, 0.0) + amount

    def render(self) -> Iterable[str]:
        """Prometheus text lines."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for value, count in sorted(self.values.items()):
            labels = {self.label: value} if self.label else {}
            yield f"{self.name}{_labels(labels)} {count:g}"


class Histogram:
    """A histogram with fixed buckets."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.total = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.total += 1

    def render(self) -> Iterable[str]:
        """Prometheus text lines (cumulative buckets)."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            yield f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.total}'
        yield f"{self.name}_sum {self.sum:.6f}"
        yield f"{self.name}_count {self.total}"


class Metrics:
    """Every metric of the proxy. Gauges are read at scrape time through `gauges`."""

    def __init__(self) -> None:
        self.commit_seconds = Histogram(
            "durable_commit_seconds", "Duration of one LMDB write transaction, fsync included.", _LATENCY_BUCKETS
        )
        self.commit_batch = Histogram(
            "durable_commit_batch_size", "Write requests grouped into one transaction (group commit).", _SIZE_BUCKETS
        )
        self.step_seconds = Histogram(
            "durable_step_ack_seconds", "Time to journal one step ack, from request to committed answer.",
            _LATENCY_BUCKETS,
        )  # fmt: skip
        self.attempts = Counter("durable_attempts_total", "Attempts by how they ended.", "outcome")
        self.retries = Counter("durable_retries_total", "Attempts that failed and were scheduled for a retry.")
        self.timers_fired = Counter("durable_timers_fired_total", "Durable timers fired.")
        self.unauthorized = Counter(
            "durable_unauthorized_total", "Requests refused (401) for a missing or wrong token or key.", "api"
        )
        self.gauges: list[Callable[[], Iterable[str]]] = []

    def observe_commit(self, seconds: float, batch: int) -> None:
        """A write transaction committed `batch` requests in `seconds`."""
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(batch)

    def render(self) -> str:
        """The whole exposition, in Prometheus text format 0.0.4."""
        lines: list[str] = []
        for metric in (
            self.commit_seconds, self.commit_batch, self.step_seconds, self.attempts, self.retries, self.timers_fired,
            self.unauthorized,
        ):  # fmt: skip
            lines.extend(metric.render())
        for gauge in self.gauges:
            lines.extend(gauge())
        return "\n".join(lines) + "\n"

    def render_gauges(
        self,
        *,
        statuses: dict[str, int],
        map_bytes: int,
        used_bytes: int,
        running_attempts: int,
        purged: int,
        resident_bytes: int,
        resident_drops: int,
    ) -> list[str]:
        """The gauges read from the running proxy at scrape time, in exposition lines."""
        lines = [
            "# HELP durable_invocations Invocations by status.",
            "# TYPE durable_invocations gauge",
        ]
        for status, count in sorted(statuses.items()):
            lines.append(f'durable_invocations{{status="{status}"}} {count}')
        lines += [
            "# HELP durable_lmdb_map_bytes Size of the LMDB map.",
            "# TYPE durable_lmdb_map_bytes gauge",
            f"durable_lmdb_map_bytes {map_bytes}",
            "# HELP durable_lmdb_used_bytes Bytes of the LMDB map in use.",
            "# TYPE durable_lmdb_used_bytes gauge",
            f"durable_lmdb_used_bytes {used_bytes}",
            "# HELP durable_running_attempts Attempts in flight.",
            "# TYPE durable_running_attempts gauge",
            f"durable_running_attempts {running_attempts}",
            "# HELP durable_purged_total Completed invocations purged by the retention sweeper.",
            "# TYPE durable_purged_total counter",
            f"durable_purged_total {purged}",
            "# HELP durable_lmdb_map_resident_bytes LMDB file pages mapped by the proxy (part of its RSS).",
            "# TYPE durable_lmdb_map_resident_bytes gauge",
            f"durable_lmdb_map_resident_bytes {resident_bytes}",
            "# HELP durable_lmdb_map_drops_total Times the mapped LMDB pages passed the limit and were dropped.",
            "# TYPE durable_lmdb_map_drops_total counter",
            f"durable_lmdb_map_drops_total {resident_drops}",
        ]
        return lines
