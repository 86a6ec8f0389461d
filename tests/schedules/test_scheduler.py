"""The beat scheduler's decisions with a fixed clock: which slot it fires, after a restart,
after an edit, and when it is too late."""

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery_app import app
from jobs.models import Job, ScheduleSlot
from jobs.schedules.scheduler import OffloadScheduler

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    monkeypatch.setattr("jobs.services.jobs_dispatch", lambda *, jobs, expires=None: None)


def _scheduler() -> OffloadScheduler:
    # The schedules were "created" at T0 on the fixed clock (slots before it never run).
    PeriodicTask.objects.update(date_changed=T0)
    return OffloadScheduler(app=app, lazy=True)


def _due_times(name):
    return [s.due_at for s in ScheduleSlot.objects.filter(schedule=name).order_by("due_at")]


def test_fires_each_slot_once_across_ticks_and_restarts(make_schedule):
    make_schedule("tick", every=10)
    beat = _scheduler()

    assert beat.slots_fire(now=T0 + timedelta(seconds=10.5)) == 1
    assert beat.slots_fire(now=T0 + timedelta(seconds=11)) == 0  # same slot, same process
    assert _scheduler().slots_fire(now=T0 + timedelta(seconds=12)) == 0  # a restarted beat
    Job.objects.update(status="succeeded")  # the run ends: the next slot is not skipped
    assert beat.slots_fire(now=T0 + timedelta(seconds=20.2)) == 1

    assert _due_times("tick") == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    assert Job.objects.count() == 2


def test_an_edit_that_moves_the_slot_grid_adds_no_early_run(make_schedule):
    task = make_schedule("edited", every=10)
    beat = _scheduler()
    assert beat.slots_fire(now=T0 + timedelta(seconds=10.5)) == 1

    task.interval, _ = IntervalSchedule.objects.get_or_create(every=3, period="seconds")
    task.save()
    PeriodicTask.objects.update(date_changed=T0)  # edited before slot 10 was claimed
    # The new grid's latest slot (09) is before the slot already run (10): not fired.
    assert _scheduler().slots_fire(now=T0 + timedelta(seconds=10.7)) == 0
    Job.objects.update(status="succeeded")
    assert beat.slots_fire(now=T0 + timedelta(seconds=12.1)) == 1

    assert _due_times("edited") == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=12)]


def test_a_slot_found_after_its_grace_is_missed_not_run_late(make_schedule):
    make_schedule("late", every=60, expire_seconds=5)
    beat = _scheduler()

    assert beat.slots_fire(now=T0 + timedelta(seconds=66)) == 0  # slot 60 is 6 s late
    assert beat.slots_fire(now=T0 + timedelta(seconds=121)) == 1
    assert _due_times("late") == [T0 + timedelta(seconds=120)]


def test_a_disabled_schedule_fires_nothing(make_schedule):
    make_schedule("off", every=10, enabled=False)
    assert _scheduler().slots_fire(now=T0 + timedelta(seconds=10.5)) == 0
    assert not ScheduleSlot.objects.exists()


def test_slots_within_a_longer_grace_are_caught_up_oldest_first(make_schedule):
    """A beat that stalled (or a new leader) starts the slots still within their grace."""
    make_schedule("catch-up", every=2, expire_seconds=5, overlap="allow")
    beat = _scheduler()
    # Created at T0: slots 0 and 2 are within the grace, none before the schedule existed.
    assert beat.slots_fire(now=T0 + timedelta(seconds=2.1)) == 2
    # Stalled for 7 s: slots 4 and 6 are past their 5 s grace at 11.5, 8 and 10 are not.
    assert beat.slots_fire(now=T0 + timedelta(seconds=11.5)) == 2

    assert _due_times("catch-up") == [T0 + timedelta(seconds=s) for s in (0, 2, 8, 10)]
    assert Job.objects.count() == 4


def test_a_database_error_while_firing_is_retried_on_the_next_tick(make_schedule, monkeypatch):
    from django.db import OperationalError

    from jobs.schedules import services

    make_schedule("flaky", every=10)
    beat = _scheduler()
    real_fire = services.schedule_fire
    calls = []

    def fire_once_failing(**kwargs):
        calls.append(kwargs["due_at"])
        if len(calls) == 1:
            raise OperationalError("connection lost")
        return real_fire(**kwargs)

    monkeypatch.setattr(services, "schedule_fire", fire_once_failing)
    with pytest.raises(OperationalError):
        beat.slots_fire(now=T0 + timedelta(seconds=10.5))
    assert beat.slots_fire(now=T0 + timedelta(seconds=11)) == 1

    assert _due_times("flaky") == [T0 + timedelta(seconds=10)]
