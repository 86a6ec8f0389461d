"""Writes: submitting, cancelling and requeueing jobs."""

import functools
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import amqp.exceptions
import kombu.exceptions
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from config.celery_app import app
from jobs import concurrency, delayed, events, lifecycle, logs, metrics, publishing
from jobs.errors import BrokerUnavailable, Conflict, OffloadError, PermissionDenied
from jobs.models import Job, JobStatus
from jobs.registry import Kind, json_type_errors, kind_get

logger = logging.getLogger(__name__)

BROKER_ERRORS = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.AMQPError)


@dataclass
class JobSpec:
    """One job as a caller asks for it, before validation."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    callback_url: str = ""
    run_at: datetime | None = None
    countdown: float | None = None


class ParamsSerializers:
    """One params serializer per kind for the calling thread, reused by every submit it
    makes (`for_owner`).

    DRF deep-copies a serializer's declared fields for each new instance: that copy was a
    sixth of a bulk submit's CPU and a seventh of a single submit's. Validation keeps no
    state on the instance (`run_validation`), and the owner is put in the instance's context
    before each use, so one instance per kind serves every job a thread submits. Instances
    are never shared between threads."""

    _local = threading.local()

    def __init__(self) -> None:
        self.owner: AbstractBaseUser | None = None
        self._by_kind: dict[tuple[str, type], Any] = {}

    @classmethod
    def for_owner(cls, owner: AbstractBaseUser | None) -> "ParamsSerializers":
        serializers = getattr(cls._local, "serializers", None)
        if serializers is None:
            serializers = cls._local.serializers = cls()
        serializers.owner = owner
        return serializers

    def get(self, kind: Kind, params: dict[str, Any]) -> Any:
        key = (kind.name, kind.params)  # a kind registered again gets a new serializer
        serializer = self._by_kind.get(key)
        if serializer is None:
            serializer = self._by_kind[key] = kind.params(data=params, context={})
        # The owner is in the context so params may name the owner's files (uploads):
        # another user's file is a 404 at submit, and nothing of it is read.
        serializer.context["owner"] = self.owner
        serializer.initial_data = params  # what a kind's validate() may read
        return serializer


def _params_validate(
    kind: Kind,
    params: Any,
    *,
    owner: AbstractBaseUser | None = None,
) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise OffloadError(
            "params must be a JSON object.",
            code="invalid_params",
            fields={"params": ["must be an object"]},
        )
    size = len(json.dumps(params, separators=(",", ":")))
    if size > settings.OFFLOAD_MAX_PARAMS_BYTES:
        raise OffloadError(
            f"params is {size} bytes; the limit is {settings.OFFLOAD_MAX_PARAMS_BYTES} bytes. "
            "Upload large inputs and name them in params instead.",
            code="params_too_large",
            fields={
                "params": [
                    f"{size} bytes is over the {settings.OFFLOAD_MAX_PARAMS_BYTES} byte limit"
                ]
            },
        )
    serializer = ParamsSerializers.for_owner(owner).get(kind, params)
    unknown = sorted(set(params) - set(serializer.fields))
    if unknown:
        raise OffloadError(
            f"params has fields kind {kind.name!r} does not know: {', '.join(unknown[:20])}. "
            f"It takes: {', '.join(serializer.fields) or 'none'}.",
            code="invalid_params",
            fields={"params": {name: ["unknown field"] for name in unknown[:20]}},
        )
    wrong_types = json_type_errors(serializer.fields, params)
    if wrong_types:
        raise OffloadError(
            f"params are not valid for kind {kind.name!r}: "
            + "; ".join(f"{name} {messages[0]}" for name, messages in wrong_types.items()),
            code="invalid_params",
            fields={"params": wrong_types},
        )
    try:
        validated = serializer.run_validation(params)
    except ValidationError as exc:
        raise OffloadError(
            f"params are not valid for kind {kind.name!r}.",
            code="invalid_params",
            fields={"params": exc.detail},
        ) from None
    return json.loads(json.dumps(validated, default=str))


def _fingerprint(spec: JobSpec) -> str:
    body = {
        "kind": spec.kind,
        "params": spec.params,
        "priority": spec.priority,
        "callback_url": spec.callback_url,
        "run_at": spec.run_at.isoformat() if spec.run_at else None,
        "countdown": spec.countdown,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _job_build(
    spec: JobSpec,
    *,
    owner: AbstractBaseUser | None,
    system: bool = False,
) -> Job:
    """Validate a spec into an unsaved Job. `system`: a job Offload itself starts (a
    schedule's run), which may be of a staff-only kind without an owner."""
    kind = kind_get(spec.kind)
    # System submissions (owner None, from trusted code) may use staff-only kinds.
    if kind.staff_only and not (system or owner is None or owner.is_staff):
        raise PermissionDenied(f"Only staff may submit jobs of kind {kind.name!r}.")
    priority = kind.priority if spec.priority is None else spec.priority
    if not 0 <= priority <= 9:
        raise OffloadError(
            f"priority must be between 0 and 9, not {priority}.",
            fields={"priority": ["must be between 0 and 9"]},
        )
    run_at = delayed.run_at_resolve(run_at=spec.run_at, countdown=spec.countdown)
    job_id = uuid.uuid4()
    job = Job(
        id=job_id,
        kind=kind.name,
        owner=owner,
        params=_params_validate(kind, spec.params, owner=owner),
        priority=priority,
        queue=kind.queue,
        callback_url=spec.callback_url,
        run_at=run_at,
        # A job due later waits in the database; jobs/delayed.py releases it when due.
        status=JobStatus.SCHEDULED if run_at and run_at > timezone.now() else JobStatus.QUEUED,
        request_fingerprint=_fingerprint(spec),
        celery_task_id=str(job_id),
        request_id=logs.request_id_current(),
    )
    if kind.concurrency_key is not None:
        job.concurrency_key = f"{kind.name}|{kind.concurrency_key(job)}"[:200]
    return job


def jobs_dispatch(*, jobs: Sequence[Job], expires: datetime | None = None) -> None:
    """Publish the jobs' messages in order; returns once the broker has confirmed them.
    `expires`: a worker that receives the message later revokes it (the job is cancelled)."""
    tasks = [kind_get(job.kind).task for job in jobs]
    publishing.jobs_publish(jobs=jobs, tasks=tasks, expires=expires)


def _dispatch_or_withdraw(jobs: Sequence[Job]) -> None:
    """Publish; if the broker cannot take them, the jobs are withdrawn (deleted) so that
    nothing is left looking queued, and the caller gets a 503."""
    try:
        jobs_dispatch(jobs=jobs)
    except BROKER_ERRORS as exc:
        Job.objects.filter(id__in=[job.id for job in jobs]).delete()
        logger.warning("broker unreachable, %d job(s) withdrawn: %s", len(jobs), exc)
        raise BrokerUnavailable(
            "The job queue is unreachable right now; nothing was queued. Try again shortly."
        ) from exc
    for job in jobs:
        events.event_publish(events.event_from_row(_job_row(job)))


def _events_publish(jobs: Sequence[Job]) -> None:
    for job in jobs:
        events.event_publish(events.event_from_row(_job_row(job)))


def _job_row(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in lifecycle.RETURNED} | {"id": job.id}


def _idempotent_replay(*, owner: AbstractBaseUser, key: str, spec: JobSpec) -> Job | None:
    existing = Job.objects.filter(owner=owner, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.request_fingerprint != _fingerprint(spec):
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request "
            f"(job {existing.id}). Use a new key for a new job.",
            code="idempotency_key_reused",
        )
    return existing


@functools.cache
def _insert_statement(vendor: str) -> tuple[tuple[Any, ...], str]:
    """The job INSERT, compiled once per database vendor: every concrete column."""
    ops = connection.ops
    fields = tuple(Job._meta.concrete_fields)
    columns = ", ".join(ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = ops.quote_name(Job._meta.db_table)
    # Names come from the model, never from input; values are bound.
    return fields, f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608


def _insert_row(job: Job) -> None:
    """`job.save(force_insert=True)` without the ORM's per-call compilation (this runs once
    per submitted job): the same field preparation (defaults, auto_now_add, JSON), one
    statement. Jobs have no save signals."""
    fields, sql = _insert_statement(connection.vendor)
    values = [field.get_db_prep_save(field.pre_save(job, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
    job._state.adding = False
    job._state.db = connection.alias


def _insert(job: Job) -> None:
    # In autocommit the INSERT is its own transaction: no BEGIN/COMMIT round trips. Inside
    # a caller's transaction a savepoint keeps a duplicate key from breaking it.
    if transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            _insert_row(job)
    else:
        _insert_row(job)


def job_submit(
    *,
    spec: JobSpec,
    owner: AbstractBaseUser | None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Validate, record and queue one job. Returns (job, created); with an idempotency key
    seen before for the same request, returns the first job and created=False.

    Must be called outside a transaction: the message is published after the row is
    committed, and a broker failure withdraws the row and raises BrokerUnavailable."""
    if idempotency_key is not None:
        if owner is None:
            raise OffloadError("Idempotency keys need an owner.")
        replay = _idempotent_replay(owner=owner, key=idempotency_key, spec=spec)
        if replay is not None:
            return replay, False
    job = _job_build(spec, owner=owner)
    job.idempotency_key = idempotency_key
    try:
        if job.concurrency_key and job.status != JobStatus.SCHEDULED:
            concurrency.jobs_insert_gated(jobs=[job])
        else:
            _insert(job)
    except IntegrityError:
        # Another request with the same key won the race.
        replay = _idempotent_replay(owner=owner, key=idempotency_key, spec=spec)
        if replay is None:
            raise
        return replay, False
    if job.status == JobStatus.SCHEDULED:
        transaction.on_commit(lambda: events.event_publish(events.event_from_row(_job_row(job))))
    elif not job.held:
        transaction.on_commit(lambda: _dispatch_or_withdraw([job]), robust=False)
    # Runs only if the dispatch above did not raise (a withdrawn job was never accepted).
    transaction.on_commit(lambda: metrics.jobs_submitted([job]))
    return job, True


def jobs_bulk_submit(*, specs: Sequence[JobSpec], owner: AbstractBaseUser | None) -> list[Job]:
    """Validate every spec first (one bad item rejects the whole batch, naming its index),
    then insert all rows in one statement and publish them on one producer."""
    if not specs:
        raise OffloadError("jobs must hold at least one job.", fields={"jobs": ["empty"]})
    if len(specs) > settings.OFFLOAD_BULK_MAX:
        raise OffloadError(
            f"A bulk submit takes at most {settings.OFFLOAD_BULK_MAX} jobs, not {len(specs)}.",
            code="too_many_jobs",
            fields={"jobs": [f"at most {settings.OFFLOAD_BULK_MAX}"]},
        )
    built, errors = [], {}
    for index, spec in enumerate(specs):
        try:
            built.append(_job_build(spec, owner=owner))
        except OffloadError as exc:
            errors[str(index)] = {"message": exc.message, **exc.fields}
    if errors:
        raise OffloadError(
            f"{len(errors)} of {len(specs)} jobs are not valid; nothing was queued.",
            code="invalid_jobs",
            fields={"jobs": errors},
        )
    now_jobs = [job for job in built if job.status != JobStatus.SCHEDULED]
    later = [job for job in built if job.status == JobStatus.SCHEDULED]
    if later:
        Job.objects.bulk_create(later)
        transaction.on_commit(lambda: _events_publish(later))
    to_send: list[Job] = []
    if any(job.concurrency_key for job in now_jobs):
        to_send = concurrency.jobs_insert_gated(jobs=now_jobs)
    elif now_jobs:
        Job.objects.bulk_create(now_jobs)
        to_send = now_jobs
    if to_send:
        transaction.on_commit(lambda: _dispatch_or_withdraw(to_send), robust=False)
    transaction.on_commit(lambda: metrics.jobs_submitted(built))
    return built


def job_cancel(*, job: Job) -> Job:
    """Cancel a scheduled, queued, retrying or running job. A queued message is revoked; a
    running task sees the cancellation at its next progress call and stops there."""
    row = lifecycle.job_move(
        job_id=job.id, to=JobStatus.CANCELLED, sets={"finished_at": timezone.now()}
    )
    if row is None:
        job.refresh_from_db()
        raise Conflict(
            f"Job {job.id} is {job.status}; only scheduled, queued, retrying or running "
            "jobs can be cancelled.",
            code="not_cancellable",
        )
    try:
        app.control.revoke(str(job.id))
    except BROKER_ERRORS as exc:
        # The database says cancelled; a worker that receives the message skips it anyway.
        logger.warning("revoke of %s not broadcast: %s", job.id, exc)
    job.refresh_from_db()
    return job


def _history_entry(job: Job) -> dict[str, Any]:
    return {
        "status": job.status,
        "error": job.error,
        "attempts": job.attempts,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _requeue_sets(job: Job) -> dict[str, Any]:
    return {
        # A keyed job waits for a free slot like a new one (see jobs/concurrency.py).
        "held": bool(job.concurrency_key),
        "history": [*job.history, _history_entry(job)][-50:],
        "attempts": 0,
        "deliveries": 0,
        "finished_at": None,
        "started_at": None,
        "next_attempt_at": None,
        "result": None,
        "progress_percent": None,
        "progress_current": None,
        "progress_total": None,
        "progress_message": "",
    }


def job_retry(*, job: Job) -> Job:
    """Requeue a failed, dead or cancelled job; its attempts start afresh and the run it
    replaces is kept in `history`."""
    history = job.history
    row = lifecycle.job_move(job_id=job.id, to=JobStatus.QUEUED, sets=_requeue_sets(job))
    previous = job.status
    if row is None:
        job.refresh_from_db()
        raise Conflict(
            f"Job {job.id} is {job.status}; only failed, dead or cancelled jobs can be retried.",
            code="not_retryable",
        )
    job.refresh_from_db()
    if job.concurrency_key:
        concurrency.slots_release(key=job.concurrency_key)
        job.refresh_from_db()
        return job
    try:
        jobs_dispatch(jobs=[job])
    except BROKER_ERRORS as exc:
        lifecycle.job_requeue_undo(
            job_id=job.id, status=previous, version=row["version"], history=history
        )
        raise BrokerUnavailable(
            "The job queue is unreachable right now; the job was not requeued."
        ) from exc
    return job


REQUEUE_MAX = 10_000


def jobs_requeue(*, jobs: Sequence[Job]) -> list[Job]:
    """Requeue many failed or dead jobs (staff tools: one, a selection, all of a kind).
    Jobs that moved on meanwhile are skipped; the rest are published in one batch."""
    if len(jobs) > REQUEUE_MAX:
        raise OffloadError(f"Requeue at most {REQUEUE_MAX} jobs at once, not {len(jobs)}.")
    moved: list[tuple[Job, dict[str, Any]]] = []
    for job in jobs:
        row = lifecycle.job_move(job_id=job.id, to=JobStatus.QUEUED, sets=_requeue_sets(job))
        if row is not None:
            moved.append((job, row))
    requeued = list(Job.objects.filter(id__in=[job.id for job, _ in moved]))
    for key in sorted({job.concurrency_key for job in requeued if job.concurrency_key}):
        concurrency.slots_release(key=key)
    try:
        unkeyed = [job for job in requeued if not job.concurrency_key]
        if unkeyed:
            jobs_dispatch(jobs=unkeyed)
    except BROKER_ERRORS as exc:
        for job, row in moved:
            lifecycle.job_requeue_undo(
                job_id=job.id, status=job.status, version=row["version"], history=job.history
            )
        raise BrokerUnavailable(
            "The job queue is unreachable right now; nothing was requeued."
        ) from exc
    return requeued
