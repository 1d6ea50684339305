"""`durable_core.cron`: fire times of cron expressions in time zones (DST as documented) and of
intervals, the latest fire at or before an instant, and counting missed fires."""

from __future__ import annotations

import datetime as dt

import pytest

from durable_core.cron import MAX_MISSED_COUNT, Spec, check_spec, latest_fire, missed_fires, next_fire
from durable_core.errors import BadRequest

BERLIN = "Europe/Berlin"


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_cron_fires_strictly_after_the_instant() -> None:
    spec = Spec(cron="*/5 * * * *")
    assert next_fire(spec, _ms("2026-01-01T00:07:00+00:00")) == _ms("2026-01-01T00:10:00+00:00")
    assert next_fire(spec, _ms("2026-01-01T00:10:00+00:00")) == _ms("2026-01-01T00:15:00+00:00")
    assert next_fire(spec, _ms("2026-01-01T00:09:59.999+00:00")) == _ms("2026-01-01T00:10:00+00:00")


def test_six_fields_count_seconds() -> None:
    assert next_fire(Spec(cron="* * * * * *"), _ms("2026-01-01T00:00:00.400+00:00")) == _ms("2026-01-01T00:00:01+00:00")


def test_a_wall_time_skipped_by_spring_forward_fires_after_the_gap() -> None:
    """02:30 does not exist in Berlin on 2026-03-29: the fire is at 03:00 CEST, then 02:30 again."""
    spec = Spec(cron="30 2 * * *", timezone=BERLIN)
    first = next_fire(spec, _ms("2026-03-28T12:00:00+01:00"))
    assert first == _ms("2026-03-29T03:00:00+02:00")
    assert next_fire(spec, first) == _ms("2026-03-30T02:30:00+02:00")


def test_a_wall_time_repeated_by_fall_back_fires_at_both_instants() -> None:
    """02:30 happens twice in Berlin on 2026-10-25: the schedule fires at both (as cron does)."""
    spec = Spec(cron="30 2 * * *", timezone=BERLIN)
    first = next_fire(spec, _ms("2026-10-24T12:00:00+02:00"))
    second = next_fire(spec, first)
    assert (first, second) == (_ms("2026-10-25T02:30:00+02:00"), _ms("2026-10-25T02:30:00+01:00"))
    assert next_fire(spec, second) == _ms("2026-10-26T02:30:00+01:00")


def test_intervals_keep_the_phase_of_their_anchor() -> None:
    spec = Spec(every_ms=1000, anchor_ms=500)
    assert [next_fire(spec, at) for at in (0, 500, 1499, 1500, 10_000)] == [1500, 1500, 1500, 2500, 10_500]
    assert [latest_fire(spec, at) for at in (1500, 2499, 10_700)] == [1500, 1500, 10_500]


def test_latest_fire_includes_the_instant_itself() -> None:
    spec = Spec(cron="0 * * * *")
    assert latest_fire(spec, _ms("2026-01-01T05:00:00+00:00")) == _ms("2026-01-01T05:00:00+00:00")
    assert latest_fire(spec, _ms("2026-01-01T05:59:59+00:00")) == _ms("2026-01-01T05:00:00+00:00")


def test_missed_fires_are_counted_between_two_fire_times() -> None:
    hourly = Spec(cron="0 * * * *")
    assert missed_fires(hourly, _ms("2026-01-01T01:00:00+00:00"), _ms("2026-01-01T05:00:00+00:00")) == 5
    assert missed_fires(Spec(every_ms=1000), 1000, 7000) == 7
    assert missed_fires(Spec(every_ms=1000), 7000, 1000) == 0
    assert missed_fires(Spec(every_ms=1), 0, 10**9) == MAX_MISSED_COUNT
    assert missed_fires(Spec(cron="* * * * * *"), 0, 10**9) == MAX_MISSED_COUNT


@pytest.mark.parametrize(("spec", "match"), [
    pytest.param(Spec(), "either a cron expression", id="neither"),
    pytest.param(Spec(cron="* * * * *", every_ms=5), "not both", id="both"),
    pytest.param(Spec(cron="every day"), "is not a cron expression", id="words"),
    pytest.param(Spec(cron="* * * * *", timezone="Nowhere/Town"), "unknown time zone", id="zone"),
    pytest.param(Spec(cron="* * * * *", timezone="../etc/passwd"), "unknown time zone", id="zone-path"),
    pytest.param(Spec(every_ms=-1), "at least 1 ms", id="negative"),
])  # fmt: skip
def test_bad_specs_are_refused(spec: Spec, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        check_spec(spec)


def test_good_specs_pass() -> None:
    for spec in (Spec(cron="@hourly"), Spec(cron="0 9 * * MON-FRI", timezone=BERLIN), Spec(every_ms=250)):
        check_spec(spec)


def test_an_expression_no_date_matches_is_refused() -> None:
    with pytest.raises(BadRequest, match="never fires"):
        check_spec(Spec(cron="0 0 31 2 *"))


def test_long_names_are_refused_and_not_echoed_whole() -> None:
    with pytest.raises(BadRequest, match="unknown time zone") as zone:
        check_spec(Spec(cron="* * * * *", timezone="a" * 5000))
    with pytest.raises(BadRequest, match="is not a cron expression") as cron:
        check_spec(Spec(cron="* " * 3000))
    assert len(zone.value.message) < 200 and len(cron.value.message) < 200
