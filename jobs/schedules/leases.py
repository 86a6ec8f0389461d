"""Per-schedule run leases: what keeps a run from being overlapped.

When a slot starts a run, the run takes its schedule's lease: `token` grows by one (the
fencing token), `job_id` names the run and `expires_at` is set OFFLOAD_SCHEDULE_LEASE_SECONDS
ahead. While the job runs, its heartbeat (jobs/runtime.py, every OFFLOAD_HEARTBEAT_INTERVAL
seconds) pushes `expires_at` forward, but only while the lease still names that job: a run
whose lease was taken over (it expired while the run was paused, or the policy is `allow`)
can no longer renew it, and `lease_fence` tells it to stop writing. A crashed run stops
renewing, so its lease frees itself after at most one lease period.

The lease is held while it names a job that is not finished and `expires_at` is ahead.
"""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs.models import TERMINAL_STATUSES, Job, ScheduleLease

_TABLE = ScheduleLease._meta.db_table


def lease_seconds() -> timedelta:
    return timedelta(seconds=settings.OFFLOAD_SCHEDULE_LEASE_SECONDS)


def _job_param(job_id: uuid.UUID | str) -> object:
    job_id = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    return job_id if connection.features.has_native_uuid_field else job_id.hex


def lease_holder(*, lease: ScheduleLease, now: datetime) -> uuid.UUID | None:
    """The job holding the lease now, or None when it is free."""
    if lease.job_id is None or lease.expires_at is None or lease.expires_at <= now:
        return None
    status = Job.objects.filter(id=lease.job_id).values_list("status", flat=True).first()
    if status is None or status in TERMINAL_STATUSES:
        return None
    return lease.job_id


def lease_take(*, lease: ScheduleLease, job_id: uuid.UUID, now: datetime) -> int:
    """Give the (row-locked) lease to a new run; returns its fencing token."""
    lease.token += 1
    lease.job_id = job_id
    lease.expires_at = now + lease_seconds()
    lease.save(update_fields=["token", "job_id", "expires_at"])
    return lease.token


def lease_renew(*, job_id: uuid.UUID | str) -> bool:
    """Called by the run's heartbeat: push the lease's expiry forward if this run still
    holds it. False when another run took it over (or the job holds none)."""
    until = timezone.now() + lease_seconds()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_TABLE} SET expires_at = %s WHERE job_id = %s",  # noqa: S608
            [connection.ops.adapt_datetimefield_value(until), _job_param(job_id)],
        )
        return cursor.rowcount > 0


def lease_fence(*, job_id: uuid.UUID | str, token: int | None = None) -> bool:
    """True while this run still holds its schedule's lease (and, given a token, that very
    token): a run checks it before each write it must not repeat after a takeover."""
    leases = ScheduleLease.objects.filter(job_id=job_id, expires_at__gt=timezone.now())
    if token is not None:
        leases = leases.filter(token=token)
    return leases.exists()
