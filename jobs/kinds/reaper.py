"""`reaper`: jobs left `running` by a worker that is gone.

A running job renews `heartbeat_at` every OFFLOAD_HEARTBEAT_INTERVAL seconds (a keeper
thread in its worker). A job whose heartbeat is older than its kind's limit
(`stale_after`, default OFFLOAD_REAPER_STALE_SECONDS) and whose worker does not answer a
ping is reaped, once:

- the run is closed as `failed` with a `WorkerLost` error (a write fenced by the job's
  version, so two reapers, or a run that wakes up meanwhile, cannot both win);
- an idempotent kind is then requeued (its lost run kept in `history`), unless it was
  reaped OFFLOAD_REAPER_MAX_REQUEUES times already; a non-idempotent kind stays failed,
  since its effect may have happened.

When the workers cannot be asked (the broker is down) nothing is reaped: a job is never
declared lost on a guess.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from rest_framework import serializers

from config.celery_app import app
from jobs import lifecycle
from jobs.errors import NotFound
from jobs.models import Job, JobStatus
from jobs.registry import job_kind, kind_for_task, kind_get
from jobs.runtime import JobRun
from jobs.schedules.defaults import schedule_default

logger = logging.getLogger(__name__)
LOST = "WorkerLost"


class ReaperParams(serializers.Serializer):
    ping_timeout = serializers.FloatField(min_value=0.1, max_value=30, default=2.0)


def workers_alive(*, timeout: float) -> set[str] | None:
    """Hostnames of the workers that answer a ping; None when the broker cannot be asked."""
    from jobs.services import BROKER_ERRORS

    try:
        replies = app.control.ping(timeout=timeout)
    except BROKER_ERRORS as exc:
        logger.warning("reaper: workers could not be pinged: %s", exc)
        return None
    return {name for reply in replies for name in reply}


def _stale_after(kind_name: str) -> float:
    try:
        kind = kind_get(kind_name)
    except NotFound:  # a kind removed from the code: use the default
        return settings.OFFLOAD_REAPER_STALE_SECONDS
    return kind.stale_after or settings.OFFLOAD_REAPER_STALE_SECONDS


def _reaped_before(job: Job) -> int:
    return sum(1 for entry in job.history if (entry.get("error") or {}).get("type") == LOST)


def jobs_reap(*, live_workers: set[str] | None, now: datetime | None = None) -> dict[str, Any]:
    """Fail (and for idempotent kinds requeue) running jobs whose worker is gone."""
    from jobs.services import jobs_requeue

    if live_workers is None:
        return {"checked": 0, "requeued": [], "failed": [], "note": "workers not reachable"}
    now = now or timezone.now()
    shortest = min(
        [settings.OFFLOAD_REAPER_STALE_SECONDS]
        + [k.stale_after for k in _kinds_with_limits() if k.stale_after]
    )
    candidates = (
        Job.objects.filter(status=JobStatus.RUNNING)
        .annotate(beat=Coalesce(F("heartbeat_at"), F("started_at"), F("created_at")))
        .filter(beat__lt=now - timedelta(seconds=shortest))
        .order_by("beat")[:1000]
    )
    requeued, failed, checked = [], [], 0
    for job in candidates:
        checked += 1
        if job.beat >= now - timedelta(seconds=_stale_after(job.kind)):
            continue
        if job.worker and job.worker in live_workers:
            continue  # its worker is alive: a slow heartbeat is not a lost run
        age = (now - job.beat).total_seconds()
        row = lifecycle.job_run_write(
            job_id=job.id,
            version=job.version,
            to=JobStatus.FAILED,
            where_status=[JobStatus.RUNNING],
            sets={
                "error": {
                    "type": LOST,
                    "message": (
                        f"The worker {job.worker or '(unknown)'} running this job is gone: no "
                        f"heartbeat for {age:.0f} s. The run was abandoned."
                    ),
                    "retryable": True,
                    "attempts": job.attempts,
                },
                "finished_at": now,
            },
        )
        if row is None:
            continue  # it moved meanwhile (finished, cancelled, or another reaper won)
        job.refresh_from_db()
        kind = kind_for_task(f"jobs.kind.{job.kind}")
        idempotent = kind is not None and kind.idempotent
        if idempotent and _reaped_before(job) < settings.OFFLOAD_REAPER_MAX_REQUEUES:
            jobs_requeue(jobs=[job])
            requeued.append(str(job.id))
            logger.warning("reaper: job %s requeued (worker %s gone)", job.id, job.worker)
        else:
            failed.append(str(job.id))
            logger.warning("reaper: job %s failed (worker %s gone)", job.id, job.worker)
    return {"checked": checked, "requeued": requeued, "failed": failed}


def _kinds_with_limits() -> list[Any]:
    from jobs.registry import kinds_all

    return kinds_all()


@job_kind("reaper", params=ReaperParams, staff_only=True, priority=9, time_limit=120)
def reaper(job: JobRun) -> dict:
    """Requeue or fail running jobs whose worker is gone (stale heartbeat, no ping reply)."""
    return jobs_reap(live_workers=workers_alive(timeout=job.params["ping_timeout"]))


schedule_default(
    "offload.reaper",
    kind="reaper",
    interval_seconds=60,
    expire_seconds=50,
    description="Every minute: requeue or fail running jobs whose worker is gone.",
)
