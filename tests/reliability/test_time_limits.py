"""Soft and hard time limits on a real worker: never a job stuck running."""

import pytest

from jobs.models import Job
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _submit(api, kind, **params):
    response = api.post("/api/v1/jobs", {"kind": kind, "params": params}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _final(job_id, timeout=60):
    return wait_for(
        lambda: Job.objects.filter(id=job_id, status__in=["succeeded", "failed", "dead"]).first(),
        timeout=timeout,
        what=f"job {job_id} to end",
    )


def test_soft_time_limit_fails_the_job_with_a_timeout_error(worker, api):
    job = _final(_submit(api, "test.limited", seconds=10))

    assert job.status == "failed"
    assert job.error["type"] == "TimeLimitExceeded"
    assert "1 s" in job.error["message"]


def test_hard_time_limit_kills_the_child_and_the_job_still_ends(worker, api):
    # The task swallows its soft limit, so only the hard limit (2 s) stops it: the worker
    # kills the child and the job fails with the hard limit named (the requeued message that
    # Celery's late ack leaves behind finds the job finished and is skipped).
    job_id = _submit(api, "test.limited", seconds=10, ignore_soft_limit=True)
    job = _final(job_id, timeout=90)

    assert job.status == "failed"
    assert job.error["type"] == "TimeLimitExceeded"
    assert "2 s" in job.error["message"]
    wait_for(lambda: f"[{job_id}] ignored" in worker.log(), what="the requeued copy skipped")
    job.refresh_from_db()
    assert job.status == "failed"
    other = _final(_submit(api, "test.limited", seconds=0))
    assert other.status == "succeeded"


def test_a_crash_of_a_non_idempotent_kind_ends_dead_not_running(worker, api):
    job = _final(_submit(api, "test.crash_once"))

    assert job.status == "dead"
    assert job.error["type"] == "WorkerLostError"
    assert job.attempts <= 1
