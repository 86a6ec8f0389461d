import json

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from jobs.models import ScheduleConfig


@pytest.fixture
def make_schedule(db):
    def make(name="every-2s", *, kind="demo.sleep", params=None, every=2, overlap="skip", **extra):
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        task = PeriodicTask.objects.create(
            name=name,
            task=f"jobs.kind.{kind}",
            kwargs=json.dumps(params or {}),
            interval=interval,
            **extra,
        )
        ScheduleConfig.objects.create(periodic_task=task, overlap=overlap)
        return PeriodicTask.objects.get(pk=task.pk)

    return make
