"""The reaper kind, run by a real worker: a running job whose heartbeat is stale and whose
worker does not answer a ping is requeued (idempotent kind) or failed (the others), once."""

import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _running(kind, *, worker, heartbeat_age, params=None):
    beat = timezone.now() - timedelta(seconds=heartbeat_age)
    return Job.objects.create(
        kind=kind,
        status="running",
        params=params or {},
        worker=worker,
        heartbeat_at=beat,
        started_at=beat,
        attempts=1,
        version=2,
    )


def _reap(staff_api):
    response = staff_api.post(
        "/api/v1/jobs", {"kind": "reaper", "params": {"ping_timeout": 1.5}}, format="json"
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    job = wait_for(
        lambda: Job.objects.filter(id=job_id, status__in=["succeeded", "failed"]).first(),
        timeout=60,
        what="the reaper run",
    )
    assert job.status == "succeeded", job.error
    return job.result


def test_reaper_requeues_or_fails_stuck_jobs_once(worker, staff_api):
    live = worker.name.replace("%h", socket.gethostname())
    params = {"seconds": 0, "steps": 1, "fail": "", "fail_attempts": 1, "message": "again"}
    lost = _running("demo.sleep", worker="gone@nowhere", heartbeat_age=600, params=params)
    lost_effect = _running("test.crash_once", worker="gone@nowhere", heartbeat_age=600)
    slow_but_alive = _running("demo.sleep", worker=live, heartbeat_age=600, params=params)
    fresh = _running("demo.sleep", worker="gone@nowhere", heartbeat_age=1, params=params)

    result = _reap(staff_api)

    assert result["requeued"] == [str(lost.id)]
    assert result["failed"] == [str(lost_effect.id)]
    # The requeued job really runs again, on the live worker, and succeeds.
    rerun = wait_for(
        lambda: Job.objects.filter(id=lost.id, status="succeeded").first(),
        timeout=60,
        what="the requeued job to run",
    )
    assert rerun.result["message"] == "again"
    assert rerun.history[-1]["error"]["type"] == "WorkerLost"
    failed = Job.objects.get(id=lost_effect.id)
    assert failed.status == "failed"
    assert failed.error["type"] == "WorkerLost"
    assert "gone@nowhere" in failed.error["message"]
    assert Job.objects.get(id=slow_but_alive.id).status == "running"
    assert Job.objects.get(id=fresh.id).status == "running"

    # A second pass finds nothing new to do: each stuck job was handled once.
    again = _reap(staff_api)
    assert again["requeued"] == []
    assert again["failed"] == []
    assert len(Job.objects.get(id=lost.id).history) == 1
