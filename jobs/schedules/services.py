"""Schedules: validating and creating them, and firing one slot of one.

A schedule is a django-celery-beat `PeriodicTask` whose `task` is a job kind's task name
(`jobs.kind.cleanup`) and whose `kwargs` are the kind's params, plus Offload's options
(`ScheduleConfig`: the overlap policy). Each run is a `Job` (owner empty) whose
idempotency key names its slot: `schedule:<name>@<due time>`.
"""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from jobs import concurrency, events
from jobs.errors import OffloadError
from jobs.models import (
    JobStatus,
    OverlapPolicy,
    ScheduleConfig,
    ScheduleLease,
    ScheduleSlot,
    SlotOutcome,
)
from jobs.registry import TASK_PREFIX, Kind, kind_for_task, kind_get
from jobs.schedules import leases, timing

logger = logging.getLogger(__name__)
SLOT_KEY_PREFIX = "schedule:"


def slot_key(name: str, due_at: datetime) -> str:
    return f"{SLOT_KEY_PREFIX}{name}@{due_at.isoformat()}"[:255]


def schedule_kind(task: str) -> Kind:
    """The job kind a periodic task runs; a clear 400 for anything else."""
    kind = kind_for_task(task)
    if kind is None:
        name = task.removeprefix(TASK_PREFIX)
        kind_get(name)  # raises the "unknown kind, known kinds are ..." error
        kind = kind_for_task(TASK_PREFIX + name)
    return kind


def schedule_params_validate(*, kind: Kind, params: Any) -> dict[str, Any]:
    from jobs.services import _params_validate

    return _params_validate(kind, params)


def _json_object(raw: Any, field: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw or "{}")
    except ValueError as exc:
        raise OffloadError(
            f"{field} is not valid JSON: {exc}.", fields={field: ["not valid JSON"]}
        ) from None


def schedule_validate(
    *,
    task: str,
    kwargs: Any,
    args: Any = "[]",
    clocked_time: datetime | None = None,
    solar: bool = False,
    schedules_set: int = 1,
) -> tuple[Kind, dict[str, Any]]:
    """Everything a schedule must satisfy before it is saved (admin form and API): a known
    kind, params valid for it, no positional args, exactly one supported schedule, and a
    clocked time still ahead. Returns the kind and the validated params."""
    kind = schedule_kind(task)
    if _json_object(args, "args") not in ([], None):
        raise OffloadError(
            "Job kinds take no positional args; put the params in kwargs.",
            fields={"args": ["must be empty: []"]},
        )
    params = schedule_params_validate(kind=kind, params=_json_object(kwargs, "kwargs"))
    if solar:
        raise OffloadError(
            "Solar schedules are not supported; use an interval, a crontab or a clocked time.",
            fields={"solar": ["not supported"]},
        )
    if schedules_set != 1:
        raise OffloadError(
            "Give exactly one of interval, crontab or clocked.",
            fields={"schedule": ["exactly one of interval, crontab, clocked"]},
        )
    if clocked_time is not None and clocked_time <= timezone.now():
        raise OffloadError(
            f"The clocked time {clocked_time.isoformat()} is in the past; pick a time ahead.",
            code="clocked_in_past",
            fields={"clocked": ["in the past"]},
        )
    return kind, params


def crontab_validate(fields: dict[str, str]) -> dict[str, str]:
    """The five crontab fields, checked with Celery's own parser (and a time zone)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from celery.schedules import ParseException, crontab

    names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    unknown = sorted(set(fields) - {*names, "timezone"})
    if unknown:
        raise OffloadError(
            f"Unknown crontab fields: {', '.join(unknown)}.",
            fields={"crontab": [f"unknown: {', '.join(unknown)}"]},
        )
    clean = {name: str(fields.get(name, "*")).strip() or "*" for name in names}
    try:
        crontab(**clean)
    except (ParseException, ValueError) as exc:
        raise OffloadError(
            f"Invalid crontab {' '.join(clean.values())!r}: {exc}.",
            code="invalid_crontab",
            fields={"crontab": [str(exc)]},
        ) from None
    tz = str(fields.get("timezone") or "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise OffloadError(
            f"Unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'.",
            code="invalid_crontab",
            fields={"crontab": [f"unknown time zone {tz!r}"]},
        ) from None
    return {**clean, "timezone": tz}


@dataclass
class ScheduleSpec:
    name: str
    kind: str
    params: dict[str, Any]
    interval_seconds: int | None = None
    crontab: dict[str, str] | None = None
    clocked_at: datetime | None = None
    overlap: str = OverlapPolicy.SKIP
    enabled: bool = True
    expire_seconds: int | None = None
    description: str = ""


def _schedule_objects(spec: ScheduleSpec) -> dict[str, Any]:
    if spec.interval_seconds is not None:
        if spec.interval_seconds < 1:
            raise OffloadError(
                "interval_seconds must be at least 1.",
                fields={"interval_seconds": ["at least 1"]},
            )
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=spec.interval_seconds, period=IntervalSchedule.SECONDS
        )
        return {"interval": interval}
    if spec.crontab is not None:
        fields = crontab_validate(spec.crontab)
        crontab = CrontabSchedule.objects.filter(**fields).first()
        if crontab is None:
            crontab = CrontabSchedule.objects.create(**fields)
        return {"crontab": crontab}
    clocked = ClockedSchedule.objects.create(clocked_time=spec.clocked_at)
    return {"clocked": clocked, "one_off": True}


def schedule_create(*, spec: ScheduleSpec) -> PeriodicTask:
    """Validate and save a schedule; nothing is saved when anything is wrong."""
    kind = kind_get(spec.kind)
    given = sum(
        value is not None for value in (spec.interval_seconds, spec.crontab, spec.clocked_at)
    )
    _, params = schedule_validate(
        task=kind.task_name, kwargs=spec.params, clocked_time=spec.clocked_at, schedules_set=given
    )
    if spec.overlap not in OverlapPolicy.values:
        raise OffloadError(
            f"overlap must be one of {', '.join(OverlapPolicy.values)}.",
            fields={"overlap": [f"one of {', '.join(OverlapPolicy.values)}"]},
        )
    if PeriodicTask.objects.filter(name=spec.name).exists():
        raise OffloadError(
            f"A schedule named {spec.name!r} exists already.",
            code="schedule_exists",
            status=409,
        )
    with transaction.atomic():
        task = PeriodicTask.objects.create(
            name=spec.name,
            task=kind.task_name,
            kwargs=json.dumps(params, sort_keys=True),
            enabled=spec.enabled,
            expire_seconds=spec.expire_seconds,
            description=spec.description,
            **_schedule_objects(spec),
        )
        ScheduleConfig.objects.create(periodic_task=task, overlap=spec.overlap)
    return task


def schedule_delete(*, task: PeriodicTask) -> None:
    task.delete()


def overlap_policy(task: PeriodicTask) -> str:
    try:
        return task.offload_config.overlap
    except ScheduleConfig.DoesNotExist:
        return OverlapPolicy.SKIP


# --- Firing one slot (the leading beat process) ------------------------------------------


def slot_claim(*, name: str, due_at: datetime, holder: str) -> ScheduleSlot | None:
    """Take the slot; None (and a log line) when it was taken already."""
    try:
        with transaction.atomic():
            return ScheduleSlot.objects.create(
                schedule=name, due_at=due_at, claimed_by=holder[:255], outcome=SlotOutcome.SENT
            )
    except IntegrityError:
        logger.info("slot %s @ %s was claimed already; nothing sent", name, due_at.isoformat())
        return None


def slot_last(*, name: str) -> datetime | None:
    """The due time of the schedule's latest claimed slot."""
    return (
        ScheduleSlot.objects.filter(schedule=name)
        .order_by("-due_at")
        .values_list("due_at", flat=True)
        .first()
    )


def schedule_fire(
    *, task: PeriodicTask, due_at: datetime, holder: str, now: datetime | None = None
) -> ScheduleSlot | None:
    """Run one slot of a schedule: claim it, check the overlap lease, record the run as a
    Job and send it. Returns the slot row, or None when it was claimed already."""
    from jobs.services import BROKER_ERRORS, JobSpec, _job_build, _job_row, jobs_dispatch

    now = now or timezone.now()
    expires = due_at + timing.slot_grace(task)
    job = None
    with transaction.atomic():
        slot = slot_claim(name=task.name, due_at=due_at, holder=holder)
        if slot is None:
            return None
        lease, _ = ScheduleLease.objects.select_for_update().get_or_create(schedule=task.name)
        holding = leases.lease_holder(lease=lease, now=now)
        if holding is not None and overlap_policy(task) == OverlapPolicy.SKIP:
            slot.outcome = SlotOutcome.SKIPPED
            slot.detail = f"the previous run {holding} still holds the lease"
            slot.save(update_fields=["outcome", "detail"])
            logger.info("slot %s @ %s skipped: %s", task.name, due_at.isoformat(), slot.detail)
            return slot
        try:
            kind = schedule_kind(task.task)
            spec = JobSpec(kind=kind.name, params=json.loads(task.kwargs or "{}"))
            job = _job_build(spec, owner=None, system=True)
        except (OffloadError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            slot.outcome = SlotOutcome.FAILED
            slot.detail = f"not run: {message}"[:500]
            slot.save(update_fields=["outcome", "detail"])
            logger.error("slot %s @ %s not run: %s", task.name, due_at.isoformat(), message)
            return slot
        job.idempotency_key = slot_key(task.name, due_at)
        if job.concurrency_key:
            concurrency.jobs_insert_gated(jobs=[job])  # a held job is sent when a slot frees
        else:
            job.save(force_insert=True)
        slot.job_id = job.id
        slot.token = leases.lease_take(lease=lease, job_id=job.id, now=now)
        slot.save(update_fields=["job_id", "token"])
        PeriodicTask.objects.filter(pk=task.pk).update(
            last_run_at=now, total_run_count=F("total_run_count") + 1
        )
    if job.held:
        return slot
    try:
        jobs_dispatch(jobs=[job], expires=expires)
    except BROKER_ERRORS as exc:
        _fire_failed(job.id, slot, f"the broker was unreachable: {exc}")
        return slot
    events.event_publish(events.event_from_row(_job_row(job)))
    return slot


def _fire_failed(job_id: uuid.UUID, slot: ScheduleSlot, message: str) -> None:
    from jobs import lifecycle

    lifecycle.job_move(
        job_id=job_id,
        to=JobStatus.FAILED,
        sets={
            "error": {
                "type": "BrokerUnavailable",
                "message": f"This scheduled run was not sent: {message}"[:2000],
                "retryable": True,
                "attempts": 0,
            },
            "finished_at": timezone.now(),
        },
    )
    ScheduleSlot.objects.filter(pk=slot.pk).update(outcome=SlotOutcome.FAILED, detail=message[:500])
    logger.error("slot %s @ %s not sent: %s", slot.schedule, slot.due_at.isoformat(), message)
