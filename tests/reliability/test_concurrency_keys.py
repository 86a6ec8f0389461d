"""Concurrency keys on real workers: one job per owner at a time, in submit order, and the
waiting jobs take no worker slot from anyone else."""

import itertools

import pytest

from jobs.models import Job
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _submit(client, seconds=0.4):
    response = client.post(
        "/api/v1/jobs", {"kind": "test.exclusive", "params": {"seconds": seconds}}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def test_one_job_per_owner_at_a_time_in_submit_order(worker, api, other_api):
    mine = [_submit(api) for _ in range(4)]
    theirs = _submit(other_api)

    held = Job.objects.filter(id__in=mine[1:], held=True).count()
    assert held == 3  # waiting in the database, not in a worker's prefetch

    wait_for(
        lambda: Job.objects.filter(id__in=[*mine, theirs], status="succeeded").count() == 5,
        timeout=60,
        what="all jobs done",
    )
    runs = [Job.objects.get(id=job_id) for job_id in mine]
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at <= later.started_at, "two jobs of one owner overlapped"
    other = Job.objects.get(id=theirs)
    assert other.started_at < runs[1].started_at  # not stuck behind another owner's jobs
    assert not Job.objects.filter(held=True).exists()


def test_cancelling_the_running_job_frees_the_slot(worker, api):
    first = _submit(api, seconds=3)
    second = _submit(api, seconds=0)
    wait_for(lambda: Job.objects.filter(id=first, status="running").exists(), what="first runs")
    assert Job.objects.get(id=second).held

    assert api.post(f"/api/v1/jobs/{first}/cancel").status_code == 202

    job = wait_for(
        lambda: Job.objects.filter(id=second, status="succeeded").first(),
        timeout=30,
        what="the waiting job to start once the slot freed",
    )
    assert not job.held
