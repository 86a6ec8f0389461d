"""Reads: which jobs a user may see, and how to find them."""

import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from jobs.errors import NotFound, OffloadError
from jobs.models import Job, JobStatus


def jobs_visible(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """A user sees their own jobs; staff see every job, system jobs included."""
    if user.is_staff:
        return Job.objects.all()
    return Job.objects.filter(owner=user)


def job_get(*, user: AbstractBaseUser, job_id: str | uuid.UUID) -> Job:
    """The job, if the user may see it. Anyone else's job is a 404, never a 403."""
    try:
        job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"{str(job_id)[:80]!r} is not a job id: job ids are UUIDs.") from None
    job = jobs_visible(user=user).filter(id=job_uuid).first()
    if job is None:
        raise job_not_found(job_uuid)
    return job


def job_not_found(job_id: uuid.UUID) -> NotFound:
    return NotFound(f"No job {job_id} among the jobs you can see.")


def job_version(*, user: AbstractBaseUser, job_id: uuid.UUID) -> int | None:
    return jobs_visible(user=user).filter(id=job_id).values_list("version", flat=True).first()


def jobs_requeueable(
    *, user: AbstractBaseUser, status: str, ids: list | None = None, kind: str | None = None
) -> QuerySet[Job]:
    """Failed or dead jobs the user may requeue, by ids and/or kind, oldest first."""
    jobs = jobs_visible(user=user).filter(status=status)
    if ids:
        jobs = jobs.filter(id__in=ids)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs.order_by("created_at")


def jobs_list(
    *, user: AbstractBaseUser, status: str | None = None, kind: str | None = None
) -> QuerySet[Job]:
    jobs = jobs_visible(user=user)
    if status:
        statuses = status.split(",")
        unknown = sorted(set(statuses) - set(JobStatus.values))
        if unknown:
            raise OffloadError(
                f"Unknown status {', '.join(unknown)}; use one of {', '.join(JobStatus.values)}.",
                fields={"status": [f"unknown: {', '.join(unknown)}"]},
            )
        jobs = jobs.filter(status__in=statuses)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs.order_by("-created_at", "-id")


def job_event_snapshot(*, user: AbstractBaseUser, job_id: str | uuid.UUID) -> dict:
    """A stream's first event: the job as the database has it now (404 if not visible)."""
    from jobs.events import event_from_row

    job = job_get(user=user, job_id=job_id)
    return _public_event(event_from_row(_event_row(job)))


def jobs_event_snapshots(*, user: AbstractBaseUser, limit: int = 100) -> list[dict]:
    """The first events of an all-jobs stream: the caller's unfinished jobs, newest first."""
    from jobs.events import event_from_row
    from jobs.models import TERMINAL_STATUSES

    jobs = jobs_visible(user=user).exclude(status__in=TERMINAL_STATUSES).order_by("-created_at")
    return [_public_event(event_from_row(_event_row(job))) for job in jobs[:limit]]


def _event_row(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "version": job.version,
        "progress_percent": job.progress_percent,
        "progress_current": job.progress_current,
        "progress_total": job.progress_total,
        "progress_message": job.progress_message,
        "result": job.result,
        "error": job.error,
    }


def _public_event(event: dict) -> dict:
    event.pop("owner_id", None)
    return event
