"""`JobRun.with_finish`: a kind's bookkeeping statement rides in the same query and
transaction as the run's final write, and is never lost when that write does not come."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import runtime
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)

MARK = "UPDATE jobs_job SET progress_message = %s WHERE id = %s"


def _run(job: Job) -> runtime.JobRun:
    return runtime.JobRun(
        id=job.id, kind=job.kind, params=job.params, attempt=1, version=job.version
    )


def _queued() -> Job:
    return Job.objects.create(kind="demo.sleep", status=JobStatus.QUEUED, version=1)


def _message(job: Job) -> str:
    job.refresh_from_db()
    return job.progress_message


def test_the_statement_waits_and_goes_out_in_the_final_writes_query():
    job, other = _queued(), _queued()
    run = _run(job)

    with CaptureQueriesContext(connection) as queries:
        run.with_finish(MARK, ["recorded", other.id])
        assert len(queries) == 0
        assert _message(other) == ""
        assert run.finish(JobStatus.SUCCEEDED, {"result": {"ok": True}})

    assert len(queries) == 2  # the refresh above, then one query for both statements
    assert queries[-1]["sql"].startswith("UPDATE jobs_job SET progress_message")
    assert _message(other) == "recorded"
    job.refresh_from_db()
    assert (job.status, job.result) == ("succeeded", {"ok": True})


def test_the_statement_runs_when_the_final_write_is_refused():
    job, other = _queued(), _queued()
    run = _run(job)
    Job.objects.filter(id=job.id).update(status=JobStatus.CANCELLED, version=5)

    run.with_finish(MARK, ["recorded", other.id])

    assert run.finish(JobStatus.SUCCEEDED, {}) is False
    assert _message(other) == "recorded"
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_a_run_that_ends_without_a_final_write_still_runs_it():
    job, other = _queued(), _queued()
    run = _run(job)
    runtime.run_begin(run)
    run.with_finish(MARK, ["recorded", other.id])
    assert _message(other) == ""

    runtime.run_end()  # as postrun does after a cancelled (ignored) run

    assert _message(other) == "recorded"
    job.refresh_from_db()
    assert job.status == "queued"


def test_after_the_final_write_it_runs_at_once():
    job, other = _queued(), _queued()
    run = _run(job)
    run.finish(JobStatus.SUCCEEDED, {})

    run.with_finish(MARK, ["late", other.id])

    assert _message(other) == "late"


def test_with_server_side_binding_it_runs_at_once(monkeypatch):
    job, other = _queued(), _queued()
    run = _run(job)
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"server_side_binding": True})

    run.with_finish(MARK, ["now", other.id])

    assert _message(other) == "now"
