"""When a schedule fires: fire times of a cron expression in a time zone, or of a fixed interval.

Pure functions of their arguments (no clock). Cron expressions are parsed by croniter (five
fields, or six with seconds last; ``@hourly`` and friends too) over `zoneinfo` time zones:

* **Spring forward** (a wall time that does not exist that day, e.g. 02:30 in Europe/Berlin on
  the last Sunday of March): the fire happens at the first instant after the gap (03:00).
* **Fall back** (a wall time that happens twice): a schedule naming it fires at both instants
  (02:30 CEST, then 02:30 CET an hour later), as cron itself does. Use UTC, or an interval, for a
  job that must run exactly every 24 hours.

An interval schedule fires at ``anchor + k * every`` (k >= 1): the anchor is the time it was
created, so its fires keep their phase across restarts and pauses.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from durable_core.errors import BadRequest

__all__ = ["MAX_MISSED_COUNT", "Spec", "check_spec", "latest_fire", "missed_fires", "next_fire"]

#: `missed_fires` stops counting here (a cron schedule's fires are counted one by one).
MAX_MISSED_COUNT = 10_000
#: Longest cron expression and time zone name taken (IANA names are under 40 characters).
_MAX_CRON = 200
_MAX_ZONE = 64


class Spec:
    """What a schedule's fire times depend on: a cron expression and time zone, or an interval."""

    __slots__ = ("anchor_ms", "cron", "every_ms", "timezone")

    def __init__(self, *, cron: str = "", timezone: str = "UTC", every_ms: int = 0, anchor_ms: int = 0) -> None:
        self.cron = cron
        self.timezone = timezone
        self.every_ms = every_ms
        self.anchor_ms = anchor_ms


def _croniter() -> Any:
    # Imported on first use, not with durable_core: the handler SDK's toolkit imports the machine
    # and must run with the SDK's own dependencies (msgspec, httpx), where only intervals work.
    try:
        return importlib.import_module("croniter").croniter
    except ImportError:
        raise BadRequest("cron schedules need croniter (pip install 'durable-proxy[proxy]')") from None


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:59] + "…"


def _zone(name: str) -> ZoneInfo:
    try:
        if len(name) > _MAX_ZONE:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(f"unknown time zone '{_shown(name)}' (an IANA name such as Europe/Berlin, or UTC)") from None


def check_spec(spec: Spec) -> None:
    """Raise BadRequest unless `spec` is exactly one of a valid cron expression that some date
    matches (with a known time zone) or a positive interval."""
    if bool(spec.cron) == bool(spec.every_ms):
        raise BadRequest("a schedule has either a cron expression (cron) or an interval (every), not both")
    if spec.every_ms:
        if spec.every_ms < 1:
            raise BadRequest("the interval must be at least 1 ms")
        return
    _zone(spec.timezone)
    if len(spec.cron) > _MAX_CRON or not _croniter().is_valid(spec.cron):
        raise BadRequest(f"'{_shown(spec.cron)}' is not a cron expression (minute hour day month weekday [second])")
    _cron_time(spec, 0, "get_next")  # BadRequest if no date ever matches it


def _cron_time(spec: Spec, at_ms: int, step: str) -> int:
    """croniter's next (`step` ``get_next``) or previous (``get_prev``) fire from `at_ms`."""
    start = dt.datetime.fromtimestamp(at_ms / 1000, tz=_zone(spec.timezone))
    try:
        fire: float = getattr(_croniter()(spec.cron, start), step)(float)
    except (ValueError, OverflowError, KeyError) as exc:  # croniter's errors derive from ValueError
        raise BadRequest(f"'{_shown(spec.cron)}' never fires (no date matches it: {exc})") from None
    return round(fire * 1000)


def next_fire(spec: Spec, after_ms: int) -> int:
    """The first fire time strictly after `after_ms` (epoch ms).

    Raises:
        BadRequest: a cron expression no date matches (``0 0 31 2 *``).
    """
    if spec.every_ms:
        if after_ms < spec.anchor_ms:
            return spec.anchor_ms + spec.every_ms
        return spec.anchor_ms + ((after_ms - spec.anchor_ms) // spec.every_ms + 1) * spec.every_ms
    return _cron_time(spec, after_ms, "get_next")


def latest_fire(spec: Spec, at_ms: int) -> int:
    """The last fire time at or before `at_ms` (for an interval, at most the anchor's first fire
    later: callers ask only once a fire is due)."""
    if spec.every_ms:
        steps = max(1, (at_ms - spec.anchor_ms) // spec.every_ms)
        return spec.anchor_ms + steps * spec.every_ms
    # croniter's previous fire is strictly before its start: start one ms later to include `at_ms`.
    return _cron_time(spec, at_ms + 1, "get_prev")


def missed_fires(spec: Spec, first_ms: int, last_ms: int) -> int:
    """How many fire times lie in [first_ms, last_ms], both fire times (at most `MAX_MISSED_COUNT`)."""
    if last_ms < first_ms:
        return 0
    if spec.every_ms:
        return min(MAX_MISSED_COUNT, (last_ms - first_ms) // spec.every_ms + 1)
    count, at = 1, first_ms
    while count < MAX_MISSED_COUNT:
        at = next_fire(spec, at)
        if at > last_ms:
            break
        count += 1
    return count
