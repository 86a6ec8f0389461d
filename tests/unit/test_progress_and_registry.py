"""The progress helper's throttle, and what the registry gives a kind's task."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import runtime
from jobs.errors import JobCancelled
from jobs.models import Job, JobStatus
from jobs.registry import RetryPolicy, kind_get

pytestmark = pytest.mark.django_db(transaction=True)


def _run(job: Job) -> runtime.JobRun:
    return runtime.JobRun(
        id=job.id,
        kind=job.kind,
        params={},
        attempt=1,
        version=job.version,
        marked=job.status == JobStatus.RUNNING,
    )


def test_progress_writes_at_most_a_few_times_a_second(settings):
    settings.OFFLOAD_PROGRESS_INTERVAL = 60
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.RUNNING)
    run = _run(job)

    for step in range(1, 1000):
        run.progress(step, 1000)

    job.refresh_from_db()
    assert job.version == 2  # only the first call wrote
    assert job.progress_current == 1
    run.progress(1000, 1000)  # the last step is always written
    job.refresh_from_db()
    assert (job.version, job.progress_percent) == (3, 100.0)


def test_progress_raises_when_the_job_was_cancelled():
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.CANCELLED)
    with pytest.raises(JobCancelled):
        _run(job).progress(1, 10)


def test_report_progress_uses_the_current_run():
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.RUNNING)
    runtime.run_begin(_run(job))
    try:
        runtime.report_progress(3, 4, "three of four")
    finally:
        runtime.run_end()
    job.refresh_from_db()
    assert (job.progress_current, job.progress_message) == (3, "three of four")
    with pytest.raises(RuntimeError):
        runtime.report_progress(1, 2)


def test_idempotent_kind_gets_late_acks_and_requeue_on_worker_loss():
    task = kind_get("demo.sleep").task
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.ignore_result is True
    assert task.queue == "default"
    assert task.name == "jobs.kind.demo.sleep"


def test_retry_delay_is_full_jitter_under_the_cap():
    policy = RetryPolicy(on=(ValueError,), backoff=2, backoff_max=10)
    delays = [policy.delay(attempt) for attempt in range(1, 8) for _ in range(50)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(policy.delay(1) for _ in range(200)) <= 2
    assert policy.is_transient(ValueError())
    assert not policy.is_transient(KeyError())


def test_a_short_run_writes_once_folding_in_the_running_move():
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.QUEUED)
    run = _run(job)

    with CaptureQueriesContext(connection) as queries:
        assert run.finish(JobStatus.SUCCEEDED, {"result": {"ok": 1}})

    assert len(queries) == 1
    job.refresh_from_db()
    assert (job.status, job.version, job.attempts, job.result) == ("succeeded", 2, 1, {"ok": 1})
    assert job.started_at is not None


def test_a_long_run_is_marked_running_then_finishes():
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.QUEUED)
    run = _run(job)

    assert run.mark()
    job.refresh_from_db()
    assert (job.status, job.version) == ("running", 2)
    started = job.started_at
    assert run.finish(JobStatus.SUCCEEDED, {})
    job.refresh_from_db()
    assert (job.status, job.version, job.started_at) == ("succeeded", 3, started)


def test_a_cancel_during_the_run_wins_over_its_writes():
    from jobs import services

    job = Job.objects.create(kind="demo.sleep", status=JobStatus.QUEUED)
    run = _run(job)  # claimed at version 1
    services.job_cancel(job=job)

    assert not run.mark()
    assert not run.finish(JobStatus.SUCCEEDED, {"result": {"late": True}})
    job.refresh_from_db()
    assert (job.status, job.result) == ("cancelled", None)


def test_an_old_run_cannot_write_after_a_requeue():
    job = Job.objects.create(kind="demo.sleep", status=JobStatus.QUEUED)
    old = _run(job)
    assert old.mark()
    Job.objects.filter(id=job.id).update(status=JobStatus.FAILED, version=5)
    from jobs import lifecycle

    lifecycle.job_move(job_id=job.id, to=JobStatus.QUEUED)  # requeued: version 6

    assert not old.finish(JobStatus.SUCCEEDED, {"result": {"stale": True}})
    job.refresh_from_db()
    assert (job.status, job.result) == ("queued", None)
