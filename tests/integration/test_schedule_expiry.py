"""A schedule's run whose message expired before a worker took it is cancelled unrun, with
an `Expired` error, on a real worker: a backlog never runs one periodic job many times."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.services import JobSpec, _job_build, jobs_dispatch
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_an_expired_run_message_is_cancelled_unrun(worker):
    job = _job_build(JobSpec(kind="demo.sleep", params={"message": "stale"}), owner=None)
    job.save(force_insert=True)

    jobs_dispatch(jobs=[job], expires=timezone.now() - timedelta(seconds=1))

    done = wait_for(
        lambda: Job.objects.filter(id=job.id, status="cancelled").first(),
        timeout=30,
        what="the expired run to be cancelled",
    )
    assert done.error["type"] == "Expired"
    assert done.started_at is None
    assert done.result is None
