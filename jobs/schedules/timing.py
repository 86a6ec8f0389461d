"""When a schedule's slots fall. Pure functions of the schedule and a given `now`, so every
beat process (and a test with a fixed clock) computes the same slots.

A slot is the nominal due time of one run; with the schedule's name it is the key of the
run's claim (`ScheduleSlot`). The rules:

- interval: every `every` `period` counted from the schedule's `start_time`, or from the
  Unix epoch when it has none (so slots are the same whichever beat computes them, and an
  edit or a restart does not shift them);
- crontab: the wall-clock times of the crontab in its time zone, converted to UTC. Day of
  month and day of week must both match (Celery's rule). On a DST change: a wall time that
  does not exist (spring forward) runs once, shifted forward by the gap (02:30 -> 03:30);
  a wall time that exists twice (fall back) runs once, at its first occurrence, unless the
  crontab runs every hour (`hour="*"`), which then runs in both occurrences so it keeps
  running every real hour;
- clocked: its one time.

A slot may start until `grace` after it is due (the periodic task's `expire_seconds`, or
else the interval, capped at OFFLOAD_SCHEDULE_GRACE_SECONDS); a later start is a missed
slot, never a burst of catch-up runs. The same bound is the message's `expires`.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab as celery_crontab
from django.conf import settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Far enough to find the next 29 February of a "29 2 *" crontab.
_MAX_DAYS = 366 * 8 + 2


def _period(interval: Any) -> timedelta:
    return timedelta(**{interval.period: interval.every})


def _zone(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    return ZoneInfo(str(value or "UTC"))


def cron_fields(crontab: Any) -> celery_crontab:
    """The expanded sets of a CrontabSchedule row (or of anything with the five fields)."""
    return celery_crontab(
        minute=crontab.minute,
        hour=crontab.hour,
        day_of_week=crontab.day_of_week,
        day_of_month=crontab.day_of_month,
        month_of_year=crontab.month_of_year,
    )


def _day_matches(cron: celery_crontab, day: date) -> bool:
    return (
        day.month in cron.month_of_year
        and day.day in cron.day_of_month
        and day.isoweekday() % 7 in cron.day_of_week
    )


def _exists(naive: datetime, zone: ZoneInfo, fold: int) -> bool:
    aware = naive.replace(tzinfo=zone, fold=fold)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == naive


def cron_day_times(cron: celery_crontab, zone: ZoneInfo, day: date) -> list[datetime]:
    """The UTC instants at which the crontab fires on one local calendar day."""
    if not _day_matches(cron, day):
        return []
    every_hour = len(cron.hour) == 24
    times: set[datetime] = set()
    for hour in cron.hour:
        for minute in cron.minute:
            naive = datetime(day.year, day.month, day.day, hour, minute)
            first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if not _exists(naive, zone, 0):
                # In the spring-forward gap: an hourly crontab simply has no such hour;
                # a fixed time runs once, shifted forward by the gap.
                if not every_hour:
                    times.add(first)
                continue
            times.add(first)
            second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
            if every_hour and second != first and _exists(naive, zone, 1):
                times.add(second)
    return sorted(times)


def _cron_days(zone: ZoneInfo, around: datetime, step: int) -> Iterator[date]:
    day = around.astimezone(zone).date() + timedelta(days=-step)
    for _ in range(_MAX_DAYS):
        day += timedelta(days=step)
        yield day


def cron_latest(cron: celery_crontab, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The last firing at or before `now`."""
    for day in _cron_days(zone, now + timedelta(days=1), -1):
        past = [t for t in cron_day_times(cron, zone, day) if t <= now]
        if past:
            return past[-1]
    return None


def cron_next(cron: celery_crontab, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The first firing strictly after `now`."""
    for day in _cron_days(zone, now - timedelta(days=1), 1):
        future = [t for t in cron_day_times(cron, zone, day) if t > now]
        if future:
            return future[0]
    return None


def slot_latest(task: Any, now: datetime) -> datetime | None:
    """The latest slot of a periodic task at or before `now` (None: none yet)."""
    start = task.start_time
    if task.interval_id:
        period = _period(task.interval)
        anchor = start or EPOCH
        if now < anchor:
            return None
        return anchor + ((now - anchor) // period) * period
    if task.crontab_id:
        slot = cron_latest(cron_fields(task.crontab), _zone(task.crontab.timezone), now)
    elif task.clocked_id:
        slot = task.clocked.clocked_time
        slot = slot if slot <= now else None
    else:
        return None  # solar schedules are not supported (refused when saved)
    if slot is not None and start is not None and slot < start:
        return None
    return slot


def slot_next(task: Any, now: datetime) -> datetime | None:
    """The first slot strictly after `now` (None: no more)."""
    start = task.start_time
    if start is not None and now < start:
        now = start - timedelta(microseconds=1)
    if task.interval_id:
        latest = slot_latest(task, now)
        anchor = start or EPOCH
        return anchor if latest is None else latest + _period(task.interval)
    if task.crontab_id:
        return cron_next(cron_fields(task.crontab), _zone(task.crontab.timezone), now)
    if task.clocked_id:
        slot = task.clocked.clocked_time
        return slot if slot > now else None
    return None


def slots_between(task: Any, *, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The slots in (after, until], oldest first; at most the newest `limit` of them."""
    slots: list[datetime] = []
    current = slot_latest(task, until)
    while current is not None and current > after and len(slots) < limit:
        slots.append(current)
        current = slot_latest(task, current - timedelta(microseconds=1))
    return slots[::-1]


def slot_grace(task: Any) -> timedelta:
    """How late a slot may still start (and when its message expires)."""
    if task.expire_seconds:
        return timedelta(seconds=task.expire_seconds)
    cap = timedelta(seconds=settings.OFFLOAD_SCHEDULE_GRACE_SECONDS)
    if task.interval_id:
        return min(_period(task.interval), cap)
    return cap
