"""Jobs from submit to a final state through a real worker on RabbitMQ and PostgreSQL."""

import socket

import pytest

from jobs.models import Job
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _submit(api, **body):
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep", **body}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _final(job_id, timeout=30):
    def done():
        job = Job.objects.get(id=job_id)
        return job if job.is_finished else None

    return wait_for(done, timeout=timeout, what=f"job {job_id} to finish")


def test_job_succeeds_with_result_and_progress(worker, api):
    job_id = _submit(api, params={"seconds": 0.3, "steps": 3, "message": "hello"})

    job = _final(job_id)

    assert job.status == "succeeded"
    assert job.result == {"slept": 0.3, "attempt": 1, "message": "hello"}
    assert job.progress_percent == 100.0
    assert job.attempts == 1
    assert job.started_at <= job.finished_at
    assert job.worker.startswith("test-")
    # queued(1) -> running(2) -> 3 progress writes at most -> succeeded
    assert 3 <= job.version <= 6
    body = api.get(f"/api/v1/jobs/{job_id}").json()
    assert body["status"] == "succeeded"
    assert body["result"]["message"] == "hello"


def test_job_failure_is_recorded_without_retry(worker, api):
    job_id = _submit(api, params={"fail": "error", "message": "bad input row 3"})

    job = _final(job_id)

    assert job.status == "failed"
    assert job.attempts == 1
    assert job.error == {
        "type": "DemoError",
        "message": "bad input row 3",
        "retryable": False,
        "attempts": 1,
    }


def test_transient_failure_retries_then_succeeds(worker, api):
    job_id = _submit(api, params={"fail": "transient", "fail_attempts": 1})

    job = _final(job_id)

    assert job.status == "succeeded"
    assert job.attempts == 2
    assert job.result["attempt"] == 2


def test_transient_failure_exhausts_attempts_and_dies(worker, api):
    job_id = _submit(api, params={"fail": "transient", "fail_attempts": 10})

    job = _final(job_id)

    assert job.status == "dead"
    assert job.attempts == 3
    assert job.error["type"] == "DemoTransientError"
    assert job.error["retryable"] is True


def test_cancel_running_job_stops_at_next_progress_call(worker, api):
    job_id = _submit(api, params={"seconds": 30, "steps": 300})
    wait_for(lambda: Job.objects.get(id=job_id).status == "running", what="job running")

    response = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202

    # The task stops at its next progress call (0.1 s away), long before its 30 s end.
    wait_for(lambda: f"[{job_id}] ignored" in worker.log(), timeout=10, what="task stop")
    job = Job.objects.get(id=job_id)
    assert job.status == "cancelled"
    assert job.result is None
    assert (job.progress_current or 0) < 300


def test_cancel_queued_job_never_runs(worker, api):
    # Occupy both worker processes so the third job waits in the queue.
    busy = [_submit(api, params={"seconds": 2, "steps": 4}) for _ in range(2)]
    wait_for(lambda: Job.objects.filter(id__in=busy, status="running").count() == 2)
    queued = _submit(api, params={"seconds": 0})

    assert api.post(f"/api/v1/jobs/{queued}/cancel").status_code == 202

    for job_id in busy:
        assert _final(job_id).status == "succeeded"
    job = Job.objects.get(id=queued)
    assert job.status == "cancelled"
    assert job.attempts == 0
    assert job.started_at is None


def test_retry_requeues_failed_job_and_it_runs_again(worker, api):
    job_id = _submit(api, params={"fail": "error"})
    assert _final(job_id).status == "failed"

    response = api.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"

    job = wait_for(
        lambda: Job.objects.filter(id=job_id, status="failed", attempts=1, version__gt=3).first(),
        what="the requeued job to fail again",
    )
    assert job.error["type"] == "DemoError"


def test_a_short_job_is_written_once(worker, api):
    job_id = _submit(api, params={"seconds": 0})

    job = _final(job_id)

    assert job.status == "succeeded"
    assert job.version == 2  # queued (1) -> succeeded (2): the running move is folded in
    assert job.attempts == 1
    assert job.started_at is not None


def test_a_long_job_is_seen_running_before_it_ends(worker, api):
    # One step: no progress call until the very end, so only the keeper can mark it.
    job_id = _submit(api, params={"seconds": 1.5, "steps": 1})

    running = wait_for(
        lambda: Job.objects.filter(id=job_id, status="running").first(), what="running mark"
    )
    assert running.started_at is not None
    assert running.worker.startswith("test-")
    assert _final(job_id).status == "succeeded"


def test_heartbeat_is_renewed_while_a_long_job_runs(worker, api, log_dir):
    from config.celery_app import app
    from tests.support import Worker, process_env

    # Only a worker with a short heartbeat interval may take this job.
    session_worker = worker.name.replace("%h", socket.gethostname())
    app.control.cancel_consumer("default", destination=[session_worker], reply=True)
    quick = Worker(log_dir=log_dir, env=process_env(OFFLOAD_HEARTBEAT_INTERVAL="0.2")).start()
    try:
        job_id = _submit(api, params={"seconds": 3, "steps": 1})
        first = wait_for(
            lambda: Job.objects.filter(id=job_id, status="running").first(), what="running"
        ).heartbeat_at
        later = wait_for(
            lambda: Job.objects.filter(id=job_id, heartbeat_at__gt=first).first(),
            what="a renewed heartbeat",
        )
        assert later.status == "running"
        assert later.version == 2  # heartbeats are not changes: no version bump, no event
        assert later.worker == quick.name.replace("%h", socket.gethostname())
    finally:
        quick.stop()
        app.control.add_consumer("default", destination=[session_worker], reply=True)


def test_bulk_submitted_jobs_all_run(worker, api):
    jobs = [{"kind": "demo.sleep", "params": {"message": f"n{i}"}} for i in range(60)]
    response = api.post("/api/v1/jobs/bulk", {"jobs": jobs}, format="json")
    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]

    wait_for(
        lambda: Job.objects.filter(id__in=ids, status="succeeded").count() == 60,
        what="all bulk jobs to succeed",
    )
    messages = sorted(Job.objects.filter(id__in=ids).values_list("result__message", flat=True))
    assert messages == sorted(f"n{i}" for i in range(60))
