"""A priority 9 job behind a backlog of 10,000 priority 0 jobs starts near the front."""

import socket

import pytest

from config.celery_app import app
from jobs.models import Job
from jobs.services import JobSpec, jobs_bulk_submit
from tests.support import Worker, process_env, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BACKLOG = 10_000


def test_priority_job_overtakes_a_backlog_of_ten_thousand(worker, api, log_dir):
    session_worker = worker.name.replace("%h", socket.gethostname())
    app.control.cancel_consumer("default", destination=[session_worker], reply=True)
    queues_purge()
    try:
        for _ in range(BACKLOG // 500):
            jobs_bulk_submit(specs=[JobSpec(kind="demo.sleep")] * 500, owner=None)
        urgent = api.post(
            "/api/v1/jobs", {"kind": "demo.sleep", "priority": 9}, format="json"
        ).json()["id"]

        fresh = Worker(
            log_dir=log_dir,
            queues="default",
            extra_args=("--prefetch-multiplier", "1"),
            env=process_env(),
        ).start()
        try:
            job = wait_for(
                lambda: Job.objects.filter(id=urgent, status="succeeded").first(), timeout=60
            )
        finally:
            fresh.stop()
        ahead = Job.objects.filter(
            priority=0, started_at__isnull=False, started_at__lt=job.started_at
        ).count()
    finally:
        queues_purge()
        app.control.add_consumer("default", destination=[session_worker], reply=True)

    print(f"priority 9 job started after {ahead} of {BACKLOG} backlog jobs")
    assert ahead < BACKLOG * 0.01  # well inside the first few percent
