"""Delayed jobs: a job submitted with `run_at` or `countdown` waits `scheduled` in the
database, not as an ETA message in a worker (a delay of hours would outlast RabbitMQ's
`consumer_timeout` and be redelivered, or pile up in worker memory).

The leading beat process calls `jobs_release_due` every OFFLOAD_DISPATCH_INTERVAL seconds
(0.5 by default), so a job is sent within about a second of its time. Each release is the
lifecycle's conditional `scheduled -> queued` move, so a cancel that comes first wins, and
two dispatchers (two beats during a handover) never send one job twice. A job whose message
the broker refuses goes back to `scheduled` and is tried again on the next pass.

Other apps that keep due work in the database (webhook retries) register a releaser with
`releaser_register`; the leading beat runs it every `every` seconds, so one process sweeps
and no periodic task is needed.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs import concurrency, lifecycle
from jobs.errors import OffloadError
from jobs.models import Job, JobStatus

logger = logging.getLogger(__name__)
RELEASE_BATCH = 500
RUN_AT_MAX = timedelta(days=365)


def run_at_resolve(*, run_at: datetime | None, countdown: float | None) -> datetime | None:
    """When a job should start: `run_at`, or `countdown` seconds from now (None: now).

    Refused: both at once, a naive time, more than a year ahead, or further in the past
    than OFFLOAD_RUN_AT_PAST_TOLERANCE seconds (a time just past runs at once)."""
    now = timezone.now()
    if run_at is not None and countdown is not None:
        raise OffloadError(
            "Give run_at or countdown, not both.",
            code="invalid_run_at",
            fields={"countdown": ["give run_at or countdown, not both"]},
        )
    if countdown is not None:
        if not 0 <= countdown <= RUN_AT_MAX.total_seconds():
            raise OffloadError(
                f"countdown must be from 0 to {int(RUN_AT_MAX.total_seconds())} seconds "
                f"(one year), not {countdown:g}.",
                code="invalid_run_at",
                fields={"countdown": ["0 to 31536000 seconds"]},
            )
        return now + timedelta(seconds=countdown)
    if run_at is None:
        return None
    if timezone.is_naive(run_at):
        raise OffloadError(
            "run_at needs a time zone, e.g. 2030-01-01T09:00:00Z.",
            code="invalid_run_at",
            fields={"run_at": ["include a time zone offset"]},
        )
    tolerance = settings.OFFLOAD_RUN_AT_PAST_TOLERANCE
    if run_at < now - timedelta(seconds=tolerance):
        ago = (now - run_at).total_seconds()
        raise OffloadError(
            f"run_at {run_at.isoformat()} is {ago:.0f} s in the past; at most {tolerance:g} s "
            "in the past is accepted (it then runs at once). Leave run_at out to run now.",
            code="invalid_run_at",
            fields={"run_at": ["in the past"]},
        )
    if run_at > now + RUN_AT_MAX:
        raise OffloadError(
            f"run_at {run_at.isoformat()} is more than a year ahead; schedule it at most "
            f"until {(now + RUN_AT_MAX).isoformat()}.",
            code="invalid_run_at",
            fields={"run_at": ["at most one year ahead"]},
        )
    return run_at


def jobs_release_due(*, now: datetime | None = None, limit: int = RELEASE_BATCH) -> int:
    """Send every scheduled job whose time has come (up to `limit`); returns how many."""
    from jobs.services import BROKER_ERRORS, jobs_dispatch

    now = now or timezone.now()
    due = list(
        Job.objects.filter(status=JobStatus.SCHEDULED, run_at__lte=now)
        .order_by("run_at")
        .values_list("id", "concurrency_key")[:limit]
    )
    if not due:
        return 0
    moved: dict[Any, dict[str, Any]] = {}
    for job_id, key in due:
        row = lifecycle.job_move(job_id=job_id, to=JobStatus.QUEUED, sets={"held": bool(key)})
        if row is not None:
            moved[job_id] = row
    jobs = list(Job.objects.filter(id__in=list(moved)).order_by("run_at"))
    unkeyed = [job for job in jobs if not job.concurrency_key]
    if unkeyed:
        try:
            jobs_dispatch(jobs=unkeyed)
        except BROKER_ERRORS as exc:
            for job in unkeyed:
                lifecycle.job_requeue_undo(
                    job_id=job.id, status=JobStatus.SCHEDULED, version=moved[job.id]["version"]
                )
            logger.warning("broker unreachable: %d due job(s) wait: %s", len(unkeyed), exc)
            return 0
    # Keyed jobs wait for a free slot of their key like a job submitted now.
    for key in sorted({job.concurrency_key for job in jobs if job.concurrency_key}):
        concurrency.slots_release(key=key)
    if jobs:
        logger.info("released %d due job(s)", len(jobs))
    return len(jobs)


@dataclass
class Releaser:
    name: str
    release: Callable[[], int]
    every: float
    next_at: float = 0.0


_releasers: dict[str, Releaser] = {}


def releaser_register(name: str, *, release: Callable[[], int], every: float) -> None:
    """Run `release()` (which returns how many things it released) every `every` seconds
    in the leading beat."""
    _releasers[name] = Releaser(name=name, release=release, every=every)


def releasers_run() -> int:
    """Run the releasers that are due. Database errors propagate (the beat's tick retries);
    an application error of one releaser is logged and does not stop the others."""
    released = 0
    now = time.monotonic()
    for releaser in _releasers.values():
        if now < releaser.next_at:
            continue
        releaser.next_at = now + releaser.every
        try:
            released += releaser.release()
        except OffloadError as exc:
            logger.warning("releaser %s: %s", releaser.name, exc.message)
    return released
