"""Poison messages and dead letters on a real worker and RabbitMQ."""

import pytest

from jobs import deadletters
from jobs.models import Job
from tests.support import queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _submit(api, **params):
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep", "params": params}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _dead_letter_ids():
    return {message["job_id"] for message in deadletters.dead_letters_peek(limit=200)}


def test_a_task_that_kills_its_worker_every_time_ends_dead(worker, api):
    queues_purge()
    job_id = _submit(api, fail="crash")

    job = wait_for(
        lambda: Job.objects.filter(id=job_id, status="dead").first(),
        timeout=90,
        what="the poison job to be declared dead",
    )

    assert job.error["type"] == "PoisonMessage"
    assert "Delivered 4 times" in job.error["message"]
    assert job.deliveries == 3  # delivered 3 times, buried unrun on the 4th
    wait_for(lambda: job_id in _dead_letter_ids(), timeout=10, what="the dead letter")
    # The worker stayed up and serves other jobs.
    other = _submit(api, seconds=0)
    wait_for(lambda: Job.objects.filter(id=other, status="succeeded").exists(), timeout=30)
    assert worker.process.poll() is None


def test_exhausted_retries_end_dead_and_dead_lettered(worker, api):
    queues_purge()
    job_id = _submit(api, fail="transient", fail_attempts=10)

    job = wait_for(lambda: Job.objects.filter(id=job_id, status="dead").first(), timeout=60)

    assert job.attempts == 3
    wait_for(lambda: job_id in _dead_letter_ids(), timeout=10, what="the dead letter")


def test_a_dead_job_requeued_starts_its_attempts_afresh(worker, api):
    queues_purge()
    job_id = _submit(api, fail="transient", fail_attempts=3)
    first = wait_for(lambda: Job.objects.filter(id=job_id, status="dead").first(), timeout=60)

    assert api.post(f"/api/v1/jobs/{job_id}/retry").status_code == 202

    again = wait_for(
        lambda: Job.objects.filter(id=job_id, status="dead", version__gt=first.version).first(),
        timeout=60,
        what="the requeued job to run its attempts again",
    )
    assert again.attempts == 3  # afresh: 3 again, not 6
