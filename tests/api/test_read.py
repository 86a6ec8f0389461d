"""GET /api/v1/jobs/{id} and GET /api/v1/jobs: ownership, ETag, Retry-After, long-poll."""

import threading
import time

import pytest
from django.db import connections

from jobs import lifecycle
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def _job(owner, **fields) -> Job:
    return Job.objects.create(kind="demo.sleep", owner=owner, **fields)


def test_get_own_job_with_etag_and_retry_after(api, user):
    job = _job(user)

    response = api.get(f"/api/v1/jobs/{job.id}")

    assert response.status_code == 200
    assert response.json()["id"] == str(job.id)
    assert response["ETag"] == f'"{job.id.hex}-1"'
    assert response["Retry-After"] == "1"


def test_finished_job_has_no_retry_after(api, user):
    job = _job(user, status=JobStatus.SUCCEEDED, result={"ok": True})

    response = api.get(f"/api/v1/jobs/{job.id}")

    assert response.json()["result"] == {"ok": True}
    assert "Retry-After" not in response


def test_if_none_match_gives_304_until_the_job_changes(api, user):
    job = _job(user)
    etag = api.get(f"/api/v1/jobs/{job.id}")["ETag"]

    assert api.get(f"/api/v1/jobs/{job.id}", HTTP_IF_NONE_MATCH=etag).status_code == 304
    lifecycle.job_move(job_id=job.id, to=JobStatus.RUNNING)
    changed = api.get(f"/api/v1/jobs/{job.id}", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed.json()["status"] == "running"


def test_another_users_job_is_404_never_403(api, other_user):
    job = _job(other_user)

    for response in (
        api.get(f"/api/v1/jobs/{job.id}"),
        api.post(f"/api/v1/jobs/{job.id}/cancel"),
        api.post(f"/api/v1/jobs/{job.id}/retry"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.version == 1


def test_staff_see_every_job_including_system_jobs(staff_api, user):
    mine = _job(user)
    system = _job(None)

    assert staff_api.get(f"/api/v1/jobs/{mine.id}").status_code == 200
    assert staff_api.get(f"/api/v1/jobs/{system.id}").status_code == 200
    listed = {job["id"] for job in staff_api.get("/api/v1/jobs").json()["results"]}
    assert {str(mine.id), str(system.id)} <= listed


def test_list_shows_only_own_jobs_filtered_and_paginated(api, user, other_user):
    for i in range(5):
        _job(user, status=JobStatus.FAILED if i % 2 else JobStatus.QUEUED)
    _job(other_user)

    everything = api.get("/api/v1/jobs").json()
    assert len(everything["results"]) == 5
    failed = api.get("/api/v1/jobs?status=failed").json()["results"]
    assert [job["status"] for job in failed] == ["failed", "failed"]
    assert api.get("/api/v1/jobs?kind=other").json()["results"] == []

    first = api.get("/api/v1/jobs?page_size=2").json()
    second = api.get(first["next"]).json()
    assert len(first["results"]) == len(second["results"]) == 2
    assert not {j["id"] for j in first["results"]} & {j["id"] for j in second["results"]}


def test_list_with_unknown_status_is_400(api):
    response = api.get("/api/v1/jobs?status=finished")
    assert response.status_code == 400
    assert "finished" in response.json()["error"]["message"]


def test_long_poll_returns_as_soon_as_the_version_changes(api, user):
    job = _job(user)

    def move_later():
        time.sleep(0.3)  # the change the poll waits for happens while it waits
        lifecycle.job_move(job_id=job.id, to=JobStatus.RUNNING)
        connections.close_all()

    mover = threading.Thread(target=move_later)
    started = time.monotonic()
    mover.start()
    response = api.get(f"/api/v1/jobs/{job.id}?wait=10")
    elapsed = time.monotonic() - started
    mover.join()

    assert response.json()["status"] == "running"
    assert elapsed < 5


def test_long_poll_times_out_with_304_when_nothing_changes(api, user):
    job = _job(user)
    etag = api.get(f"/api/v1/jobs/{job.id}")["ETag"]

    response = api.get(f"/api/v1/jobs/{job.id}?wait=0.5", HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304


def test_long_poll_on_a_finished_job_answers_at_once(api, user):
    job = _job(user, status=JobStatus.SUCCEEDED)
    started = time.monotonic()
    assert api.get(f"/api/v1/jobs/{job.id}?wait=30").status_code == 200
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan"])
def test_long_poll_with_bad_wait_is_400(api, user, wait):
    job = _job(user)
    response = api.get(f"/api/v1/jobs/{job.id}?wait={wait}")
    assert response.status_code == 400
    assert "wait" in response.json()["error"]["fields"]
