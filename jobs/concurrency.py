"""Concurrency keys: at most N running jobs per key (for example one import per owner)
across all workers, the rest waiting `queued` without taking a worker slot.

A kind declares `concurrency_key` ("owner" or a function) and `concurrency_limit`. Keys are
namespaced by kind. A job whose key is at its limit when it is submitted is recorded
`queued` with `held=True` and is not sent to the broker. Whenever a keyed job reaches a
final status, `slots_release` sends the oldest held jobs of that key (submit order) into the
free slots. Both decisions take a per-key lock (a PostgreSQL advisory lock inside the
transaction; on SQLite the IMMEDIATE transaction already serialises writers), so two
workers finishing at once cannot both fill the same slot. `slots_sweep` (run when a worker
starts) releases any key whose release was missed, e.g. because the broker was down.
"""

import logging
from collections.abc import Sequence

from django.db import connection, transaction

from jobs.models import Job, JobStatus

logger = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)


def key_lock(key: str) -> None:
    """Serialise slot decisions for one key until the current transaction ends."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def key_kind(key: str) -> str:
    return key.split("|", 1)[0]


def _active(key: str) -> int:
    return Job.objects.filter(concurrency_key=key, held=False, status__in=ACTIVE).count()


def _limit(key: str) -> int:
    from jobs.registry import kind_get

    return kind_get(key_kind(key)).concurrency_limit


def jobs_insert_gated(*, jobs: Sequence[Job]) -> list[Job]:
    """Insert the jobs; keyed ones beyond their key's free slots are held. Returns the jobs
    to send now, in order."""
    keys = sorted({job.concurrency_key for job in jobs if job.concurrency_key})
    with transaction.atomic():
        running = {}
        for key in keys:
            key_lock(key)
            running[key] = _active(key)
        for job in jobs:
            key = job.concurrency_key
            if key:
                job.held = running[key] >= _limit(key)
                running[key] += 0 if job.held else 1
        Job.objects.bulk_create(jobs)
    return [job for job in jobs if not job.held]


def slots_release(*, key: str) -> list[Job]:
    """Send the oldest held jobs of `key` into its free slots."""
    from jobs.services import BROKER_ERRORS, jobs_dispatch

    try:
        with transaction.atomic():
            key_lock(key)
            free = _limit(key) - _active(key)
            if free <= 0:
                return []
            waiting = list(
                Job.objects.filter(
                    concurrency_key=key, held=True, status=JobStatus.QUEUED
                ).order_by("created_at")[:free]
            )
            if not waiting:
                return []
            # Sent before the commit that clears `held`: a worker that picks a message up
            # early still finds the job queued, which is all its claim asks for.
            jobs_dispatch(jobs=waiting)
            Job.objects.filter(id__in=[job.id for job in waiting]).update(held=False)
    except BROKER_ERRORS as exc:
        logger.warning("concurrency key %s: held jobs not released (broker): %s", key, exc)
        return []
    return waiting


def slots_sweep() -> int:
    """Release every key that has held jobs; returns how many jobs were sent."""
    keys = (
        Job.objects.filter(held=True, status=JobStatus.QUEUED)
        .values_list("concurrency_key", flat=True)
        .distinct()
    )
    return sum(len(slots_release(key=key)) for key in list(keys))
