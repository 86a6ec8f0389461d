"""`setup_periodic_tasks`: creates the defaults, is a no-op the second time, keeps admin
edits unless --reset."""

import io
import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from jobs.models import ScheduleConfig

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = io.StringIO()
    call_command("setup_periodic_tasks", *args, stdout=out)
    return out.getvalue()


def _snapshot():
    return [
        (t.name, t.task, t.kwargs, t.interval_id, t.crontab_id, t.enabled, t.date_changed)
        for t in PeriodicTask.objects.order_by("name")
    ]


def test_first_run_creates_the_defaults():
    out = _run()

    assert "offload.cleanup: created" in out
    assert "offload.reaper: created" in out
    cleanup = PeriodicTask.objects.get(name="offload.cleanup")
    assert cleanup.task == "jobs.kind.cleanup"
    assert (cleanup.crontab.minute, cleanup.crontab.hour) == ("30", "3")
    assert json.loads(cleanup.kwargs) == {"dry_run": False}
    reaper = PeriodicTask.objects.get(name="offload.reaper")
    assert (reaper.interval.every, reaper.interval.period) == (60, "seconds")
    assert reaper.expire_seconds == 50
    assert ScheduleConfig.objects.get(periodic_task=reaper).overlap == "skip"


def test_second_run_changes_nothing():
    _run()
    before = _snapshot()
    changed = PeriodicTasks.last_change()

    out = _run()

    assert "offload.cleanup: unchanged" in out
    assert "offload.reaper: unchanged" in out
    assert _snapshot() == before
    assert PeriodicTasks.last_change() == changed  # the beats were not told to reload


def test_an_admin_edit_is_kept_unless_reset():
    _run()
    reaper = PeriodicTask.objects.get(name="offload.reaper")
    reaper.interval, _ = IntervalSchedule.objects.get_or_create(every=300, period="seconds")
    reaper.save()

    out = _run()

    assert "offload.reaper: kept" in out
    assert PeriodicTask.objects.get(name="offload.reaper").interval.every == 300

    out = _run("--reset")

    assert "offload.reaper: reset" in out
    assert PeriodicTask.objects.get(name="offload.reaper").interval.every == 60
    assert "offload.reaper: unchanged" in _run()


def test_a_changed_default_follows_the_code_when_nobody_edited_it(monkeypatch):
    from jobs.schedules import defaults

    _run()
    changed = defaults.ScheduleDefault(
        name="offload.reaper", kind="reaper", interval_seconds=120, expire_seconds=50,
        description=defaults._defaults["offload.reaper"].description,
    )  # fmt: skip
    monkeypatch.setitem(defaults._defaults, "offload.reaper", changed)

    assert "offload.reaper: updated" in _run()
    assert PeriodicTask.objects.get(name="offload.reaper").interval.every == 120
