"""Reads: schedules for the API."""

from django.db.models import QuerySet
from django_celery_beat.models import PeriodicTask


def schedules_list() -> QuerySet[PeriodicTask]:
    return PeriodicTask.objects.select_related(
        "interval", "crontab", "clocked", "solar", "offload_config"
    ).order_by("name")


def schedule_get(*, name: str) -> PeriodicTask | None:
    return schedules_list().filter(name=name).first()
