"""Default schedules declared in code, written to the database by `setup_periodic_tasks`.

A kind module declares its default schedule next to the kind:

    schedule_default("offload.reaper", kind="reaper", interval_seconds=60, expire_seconds=50)

`schedules_setup` is idempotent: a missing schedule is created; one that still looks exactly
as the command last wrote it follows the code (a changed default is applied); one an admin
edited since (any difference from what the command wrote) is kept as it is, unless
`reset=True`. What the command wrote is remembered as a hash in `ScheduleConfig`.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from jobs.models import OverlapPolicy, ScheduleConfig
from jobs.registry import kind_get
from jobs.schedules import services


@dataclass(frozen=True)
class ScheduleDefault:
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    interval_seconds: int | None = None
    crontab: dict[str, str] | None = None
    overlap: str = OverlapPolicy.SKIP
    expire_seconds: int | None = None
    description: str = ""


_defaults: dict[str, ScheduleDefault] = {}


def schedule_default(name: str, **fields: Any) -> ScheduleDefault:
    default = ScheduleDefault(name=name, **fields)
    _defaults[name] = default
    return default


def schedule_defaults() -> list[ScheduleDefault]:
    return sorted(_defaults.values(), key=lambda d: d.name)


def _state(task: PeriodicTask) -> dict[str, Any]:
    """What setup_periodic_tasks manages of a schedule, in a comparable form."""
    crontab = None
    if task.crontab_id:
        c = task.crontab
        crontab = [c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year]
        crontab.append(str(c.timezone))
    return {
        "task": task.task,
        "kwargs": json.loads(task.kwargs or "{}"),
        "interval": [task.interval.every, task.interval.period] if task.interval_id else None,
        "crontab": crontab,
        "clocked": bool(task.clocked_id),
        "enabled": task.enabled,
        "expire_seconds": task.expire_seconds,
        "overlap": services.overlap_policy(task),
        "description": task.description,
    }


def _hash(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _write(default: ScheduleDefault, task: PeriodicTask | None) -> PeriodicTask:
    kind = kind_get(default.kind)
    spec = services.ScheduleSpec(
        name=default.name,
        kind=default.kind,
        params=default.params,
        interval_seconds=default.interval_seconds,
        crontab=default.crontab,
    )
    params = services.schedule_params_validate(kind=kind, params=default.params)
    with transaction.atomic():
        if task is None:
            task = PeriodicTask(name=default.name)
        task.task = kind.task_name
        task.kwargs = json.dumps(params, sort_keys=True)
        task.args = "[]"
        task.enabled = True
        task.one_off = False
        task.expires = None
        task.expire_seconds = default.expire_seconds
        task.description = default.description
        task.interval = task.crontab = task.clocked = task.solar = None
        for name, value in services._schedule_objects(spec).items():
            setattr(task, name, value)
        task.save()
        config, _ = ScheduleConfig.objects.get_or_create(periodic_task=task)
        config.overlap = default.overlap
        config.save()
        task.refresh_from_db()
        config.managed_hash = _hash(_state(task))
        config.save(update_fields=["managed_hash"])
    return task


def _desired(default: ScheduleDefault) -> dict[str, Any]:
    kind = kind_get(default.kind)
    crontab = None
    if default.crontab is not None:
        c = services.crontab_validate(default.crontab)
        crontab = [c["minute"], c["hour"], c["day_of_week"], c["day_of_month"]]
        crontab += [c["month_of_year"], c["timezone"]]
    interval = None
    if default.interval_seconds is not None:
        interval = [default.interval_seconds, "seconds"]
    return {
        "task": kind.task_name,
        "kwargs": services.schedule_params_validate(kind=kind, params=default.params),
        "interval": interval,
        "crontab": crontab,
        "clocked": False,
        "enabled": True,
        "expire_seconds": default.expire_seconds,
        "overlap": default.overlap,
        "description": default.description,
    }


def schedules_setup(*, reset: bool = False) -> list[tuple[str, str]]:
    """Create or update the default schedules; returns (name, what happened) pairs:
    created, unchanged (nothing written), updated (the code changed and the row was not
    edited since the command wrote it), kept (edited in the admin) or reset."""
    outcomes = []
    for default in schedule_defaults():
        task = PeriodicTask.objects.filter(name=default.name).first()
        if task is None:
            _write(default, None)
            outcomes.append((default.name, "created"))
            continue
        current = _state(task)
        if current == _desired(default):
            outcomes.append((default.name, "unchanged"))
            continue
        managed = ScheduleConfig.objects.filter(periodic_task=task).first()
        untouched = managed is not None and managed.managed_hash == _hash(current)
        if reset or untouched:
            _write(default, task)
            outcomes.append((default.name, "reset" if reset else "updated"))
        else:
            outcomes.append((default.name, "kept (edited in the admin; --reset overwrites)"))
    return outcomes
