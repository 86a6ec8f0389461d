"""Slot computation with a fixed clock: intervals, clocked times, and crontabs across DST."""

import itertools
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from jobs.schedules import timing


def _z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _cron(**fields):
    base = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*"}
    return SimpleNamespace(**{**base, "month_of_year": "*", **fields})


def _crontab_task(tz: str, start=None, **fields):
    crontab = _cron(**fields)
    crontab.timezone = ZoneInfo(tz)
    return SimpleNamespace(
        interval_id=None,
        crontab_id=1,
        clocked_id=None,
        crontab=crontab,
        start_time=start,
        expire_seconds=None,
    )


def _times(tz: str, day: str, **fields) -> list[str]:
    cron = timing.cron_fields(_cron(**fields))
    times = timing.cron_day_times(cron, ZoneInfo(tz), date.fromisoformat(day))
    return [t.strftime("%Y-%m-%dT%H:%MZ") for t in times]


def test_daily_berlin_0230_around_spring_forward():
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
    assert _times("Europe/Berlin", "2026-03-28", minute="30", hour="2") == ["2026-03-28T01:30Z"]
    # Runs once, shifted forward by the gap: 03:30 CEST = 01:30 UTC.
    assert _times("Europe/Berlin", "2026-03-29", minute="30", hour="2") == ["2026-03-29T01:30Z"]
    assert _times("Europe/Berlin", "2026-03-30", minute="30", hour="2") == ["2026-03-30T00:30Z"]


def test_daily_berlin_0230_around_fall_back_runs_once():
    # 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice; it runs once, first.
    assert _times("Europe/Berlin", "2026-10-24", minute="30", hour="2") == ["2026-10-24T00:30Z"]
    assert _times("Europe/Berlin", "2026-10-25", minute="30", hour="2") == ["2026-10-25T00:30Z"]
    assert _times("Europe/Berlin", "2026-10-26", minute="30", hour="2") == ["2026-10-26T01:30Z"]


def test_hourly_crontab_runs_every_real_hour_across_both_changes():
    spring = _times("Europe/Berlin", "2026-03-29", minute="0")
    fall = _times("Europe/Berlin", "2026-10-25", minute="0")
    # A 23-hour day and a 25-hour day: one run per real hour, none twice, none missing.
    assert len(spring) == 23
    assert len(fall) == 25
    for times in (spring, fall):
        instants = [_z(t) for t in times]
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(instants))
    assert fall[2:4] == ["2026-10-25T00:00Z", "2026-10-25T01:00Z"]  # 02:00 CEST and 02:00 CET


def test_new_york_9am_moves_one_hour_in_utc_at_dst():
    before = _times("America/New_York", "2026-03-07", minute="0", hour="9")
    after = _times("America/New_York", "2026-03-09", minute="0", hour="9")
    autumn = _times("America/New_York", "2026-11-02", minute="0", hour="9")
    assert (before, after, autumn) == (
        ["2026-03-07T14:00Z"],
        ["2026-03-09T13:00Z"],
        ["2026-11-02T14:00Z"],
    )


def test_latest_and_next_slot_with_a_fixed_clock_across_spring_forward():
    task = _crontab_task("Europe/Berlin", minute="30", hour="2")
    now = _z("2026-03-29T01:00:00Z")  # 03:00 CEST, just after the jump
    assert timing.slot_latest(task, now) == _z("2026-03-28T01:30:00Z")
    assert timing.slot_next(task, now) == _z("2026-03-29T01:30:00Z")
    later = _z("2026-03-29T05:00:00Z")
    assert timing.slot_latest(task, later) == _z("2026-03-29T01:30:00Z")
    assert timing.slot_next(task, later) == _z("2026-03-30T00:30:00Z")


def test_day_of_month_and_day_of_week_must_both_match():
    task = _crontab_task("UTC", minute="0", hour="12", day_of_month="13", day_of_week="5")
    # The next Friday the 13th after 1 Jan 2026 is 13 Feb 2026, then 13 March 2026.
    assert timing.slot_next(task, _z("2026-01-01T00:00:00Z")) == _z("2026-02-13T12:00:00Z")
    assert timing.slot_next(task, _z("2026-02-13T12:00:00Z")) == _z("2026-03-13T12:00:00Z")


def _interval_task(seconds: int, start=None):
    interval = SimpleNamespace(every=seconds, period="seconds")
    return SimpleNamespace(
        interval_id=1,
        crontab_id=None,
        clocked_id=None,
        interval=interval,
        start_time=start,
        expire_seconds=None,
    )


def test_interval_slots_are_aligned_and_independent_of_who_computes_them():
    task = _interval_task(5)
    now = _z("2026-01-01T10:00:07.300000Z")
    assert timing.slot_latest(task, now) == _z("2026-01-01T10:00:05Z")
    assert timing.slot_next(task, now) == _z("2026-01-01T10:00:10Z")
    assert timing.slot_latest(task, _z("2026-01-01T10:00:10Z")) == _z("2026-01-01T10:00:10Z")


def test_interval_counts_from_start_time_and_not_before_it():
    start = _z("2026-01-01T10:00:03Z")
    task = _interval_task(60, start=start)
    assert timing.slot_latest(task, _z("2026-01-01T10:00:02Z")) is None
    assert timing.slot_next(task, _z("2026-01-01T10:00:02Z")) == start
    assert timing.slot_latest(task, _z("2026-01-01T10:02:00Z")) == _z("2026-01-01T10:01:03Z")


def test_clocked_slot_is_its_time_once_reached():
    at = _z("2026-06-01T12:00:00Z")
    task = SimpleNamespace(
        interval_id=None,
        crontab_id=None,
        clocked_id=1,
        start_time=None,
        clocked=SimpleNamespace(clocked_time=at),
        expire_seconds=None,
    )
    assert timing.slot_latest(task, at - timedelta(seconds=1)) is None
    assert timing.slot_next(task, at - timedelta(seconds=1)) == at
    assert timing.slot_latest(task, at + timedelta(hours=1)) == at
    assert timing.slot_next(task, at) is None


@pytest.mark.parametrize(
    ("seconds", "expire", "grace"), [(2, None, 2), (3600, None, 300), (60, 50, 50)]
)
def test_grace_is_expire_seconds_or_the_period_capped(seconds, expire, grace, settings):
    settings.OFFLOAD_SCHEDULE_GRACE_SECONDS = 300
    task = _interval_task(seconds)
    task.expire_seconds = expire
    assert timing.slot_grace(task) == timedelta(seconds=grace)
