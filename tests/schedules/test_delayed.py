"""The delayed-job dispatcher: releases due jobs once, keeps the others, survives a broker
that refuses, and never releases a cancelled job."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs import delayed
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch):
    sent = []
    lock = threading.Lock()

    def dispatch(*, jobs, expires=None):
        with lock:
            sent.extend(job.id for job in jobs)

    monkeypatch.setattr("jobs.services.jobs_dispatch", dispatch)
    return sent


def _scheduled(seconds_from_now, **fields):
    return Job.objects.create(
        kind="demo.sleep",
        status="scheduled",
        run_at=timezone.now() + timedelta(seconds=seconds_from_now),
        **fields,
    )


def test_due_jobs_are_released_and_the_others_wait(published):
    due = [_scheduled(-1), _scheduled(-0.1)]
    later = _scheduled(60)

    assert delayed.jobs_release_due() == 2

    assert sorted(published) == sorted(job.id for job in due)
    assert set(Job.objects.filter(id__in=[j.id for j in due]).values_list("status", flat=True)) == {
        "queued"
    }
    assert Job.objects.get(id=later.id).status == "scheduled"
    assert delayed.jobs_release_due() == 0  # nothing twice


def test_a_cancelled_scheduled_job_is_never_released(published, user):
    from jobs.services import job_cancel

    job = _scheduled(-1, owner=user)
    job_cancel(job=job)

    assert delayed.jobs_release_due() == 0
    assert published == []
    assert Job.objects.get(id=job.id).status == "cancelled"


def test_a_refused_publish_leaves_the_job_scheduled_for_the_next_pass(monkeypatch):
    job = _scheduled(-1)

    def refuse(*, jobs, expires=None):
        raise OSError("connection refused")

    monkeypatch.setattr("jobs.services.jobs_dispatch", refuse)
    assert delayed.jobs_release_due() == 0
    assert Job.objects.get(id=job.id).status == "scheduled"

    sent = []
    monkeypatch.setattr(
        "jobs.services.jobs_dispatch", lambda *, jobs, expires=None: sent.extend(jobs)
    )
    assert delayed.jobs_release_due() == 1
    assert [j.id for j in sent] == [job.id]


def test_two_dispatchers_at_once_release_each_job_once(published):
    jobs = [_scheduled(-1) for _ in range(40)]
    barrier = threading.Barrier(2)

    def release():
        barrier.wait()
        try:
            delayed.jobs_release_due()
        finally:
            connection.close()

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(published) == sorted(job.id for job in jobs)
    assert Job.objects.filter(status="queued").count() == 40


def test_a_naive_run_at_is_refused_by_the_service():
    from datetime import datetime

    from jobs.errors import OffloadError

    with pytest.raises(OffloadError, match="needs a time zone"):
        delayed.run_at_resolve(run_at=datetime(2030, 1, 1, 9, 0), countdown=None)
