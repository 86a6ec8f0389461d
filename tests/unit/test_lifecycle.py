"""The lifecycle's legal moves, enforced by one conditional UPDATE each."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import events, lifecycle
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)
S = JobStatus

LEGAL = [
    (S.SCHEDULED, S.QUEUED),
    (S.QUEUED, S.RUNNING),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.RETRYING),
    (S.RETRYING, S.RUNNING),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.DEAD),
    (S.FAILED, S.QUEUED),
    (S.DEAD, S.QUEUED),
    (S.QUEUED, S.CANCELLED),
    (S.SCHEDULED, S.CANCELLED),
    (S.RUNNING, S.CANCELLED),
    (S.CANCELLED, S.QUEUED),
]
ILLEGAL = [
    (S.SUCCEEDED, S.RUNNING),
    (S.SUCCEEDED, S.FAILED),
    (S.SUCCEEDED, S.QUEUED),
    (S.SUCCEEDED, S.CANCELLED),
    (S.FAILED, S.SUCCEEDED),
    (S.CANCELLED, S.RUNNING),
    (S.CANCELLED, S.SUCCEEDED),
    (S.DEAD, S.RUNNING),
    (S.QUEUED, S.SUCCEEDED),
    (S.SCHEDULED, S.RUNNING),
    (S.QUEUED, S.RETRYING),
]


def _job(status: str) -> Job:
    return Job.objects.create(kind="demo.sleep", status=status)


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_legal_move_changes_status_and_bumps_version(source, target):
    job = _job(source)

    row = lifecycle.job_move(job_id=job.id, to=target)

    assert row is not None
    job.refresh_from_db()
    assert job.status == target
    assert job.version == 2
    assert row["version"] == 2


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_illegal_move_is_refused_and_changes_nothing(source, target):
    job = _job(source)

    assert lifecycle.job_move(job_id=job.id, to=target, sets={"result": {"x": 1}}) is None

    job.refresh_from_db()
    assert (job.status, job.version, job.result) == (source, 1, None)


def test_duplicate_success_signal_is_a_no_op():
    job = _job(S.RUNNING)
    assert lifecycle.job_move(job_id=job.id, to=S.SUCCEEDED, sets={"result": {"n": 1}})

    assert lifecycle.job_move(job_id=job.id, to=S.SUCCEEDED, sets={"result": {"n": 2}}) is None
    assert lifecycle.job_move(job_id=job.id, to=S.FAILED, sets={"error": {"x": 1}}) is None

    job.refresh_from_db()
    assert (job.status, job.result, job.error, job.version) == (S.SUCCEEDED, {"n": 1}, None, 2)


def test_move_of_a_missing_job_returns_none():
    assert lifecycle.job_move(job_id="7d4c6f3e-0000-4000-8000-000000000000", to=S.RUNNING) is None


def test_each_move_is_one_query_and_one_event():
    job = _job(S.QUEUED)
    seen = []
    events.listener_add(seen.append)
    try:
        with CaptureQueriesContext(connection) as queries:
            lifecycle.job_move(job_id=job.id, to=S.RUNNING, increments=("attempts",))
    finally:
        events.listener_remove(seen.append)

    assert len(queries) == 1
    assert queries[0]["sql"].startswith("UPDATE")
    assert [(e["status"], e["version"]) for e in seen] == [("running", 2)]
    assert seen[0]["job_id"] == str(job.id)


def test_events_are_published_only_after_commit():
    from django.db import transaction

    job = _job(S.QUEUED)
    seen = []
    events.listener_add(seen.append)
    try:
        with transaction.atomic():
            lifecycle.job_move(job_id=job.id, to=S.CANCELLED)
            assert seen == []
        assert [e["status"] for e in seen] == ["cancelled"]
    finally:
        events.listener_remove(seen.append)


def test_progress_write_bumps_version_and_refuses_when_not_running():
    job = _job(S.RUNNING)

    assert lifecycle.job_progress_set(job_id=job.id, current=5, total=20, message="x")
    job.refresh_from_db()
    assert (job.progress_current, job.progress_total, job.progress_percent) == (5, 20, 25.0)
    assert job.version == 2

    Job.objects.filter(id=job.id).update(status=S.CANCELLED)
    assert not lifecycle.job_progress_set(job_id=job.id, current=6, total=20)


def test_concurrent_moves_only_one_wins():
    """Two racing terminal moves: the conditional UPDATE lets exactly one through."""
    import threading

    from django.db import connections

    job = _job(S.RUNNING)
    results = []
    barrier = threading.Barrier(2)

    def move(target):
        barrier.wait()
        results.append(lifecycle.job_move(job_id=job.id, to=target) is not None)
        connections.close_all()

    threads = [threading.Thread(target=move, args=(t,)) for t in (S.SUCCEEDED, S.CANCELLED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, True]
    job.refresh_from_db()
    assert job.version == 2
