"""POST /api/v1/jobs/{id}/cancel and /retry."""

import pytest

from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def _job(owner, status) -> Job:
    return Job.objects.create(kind="demo.sleep", owner=owner, status=status)


@pytest.mark.parametrize("status", ["scheduled", "queued", "running", "retrying"])
def test_cancel_moves_an_unfinished_job_to_cancelled(api, user, status):
    job = _job(user, status)

    response = api.post(f"/api/v1/jobs/{job.id}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.finished_at is not None


@pytest.mark.parametrize("status", ["succeeded", "failed", "dead", "cancelled"])
def test_cancel_of_a_finished_job_is_409_and_changes_nothing(api, user, status):
    job = _job(user, status)

    response = api.post(f"/api/v1/jobs/{job.id}/cancel")

    assert response.status_code == 409
    assert status in response.json()["error"]["message"]
    job.refresh_from_db()
    assert (job.status, job.version) == (status, 1)


@pytest.mark.parametrize("status", ["failed", "dead", "cancelled"])
def test_retry_requeues_and_resets_attempts(api, user, status):
    job = _job(user, status)
    Job.objects.filter(id=job.id).update(attempts=3, error={"type": "X", "message": "m"})

    response = api.post(f"/api/v1/jobs/{job.id}/retry")

    assert response.status_code == 202
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.error == {"type": "X", "message": "m"}  # the last error is kept as history


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_retry_of_a_job_that_has_not_failed_is_409(api, user, status):
    job = _job(user, status)

    response = api.post(f"/api/v1/jobs/{job.id}/retry")

    assert response.status_code == 409
    job.refresh_from_db()
    assert job.status == status


def test_get_on_action_is_405(api, user):
    job = _job(user, JobStatus.QUEUED)
    response = api.get(f"/api/v1/jobs/{job.id}/cancel")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_retry_keeps_the_replaced_run_in_history(api, user):
    job = _job(user, "failed")
    Job.objects.filter(id=job.id).update(attempts=2, error={"type": "E", "message": "first"})

    api.post(f"/api/v1/jobs/{job.id}/retry")

    job.refresh_from_db()
    assert job.history == [
        {"status": "failed", "error": {"type": "E", "message": "first"}, "attempts": 2,
         "finished_at": None}
    ]  # fmt: skip


def test_staff_requeue_all_dead_jobs_of_a_kind(staff_api, user):
    dead = [_job(user, "dead") for _ in range(3)]
    failed = _job(user, "failed")
    other_kind = Job.objects.create(kind="other.kind", owner=user, status="dead")

    response = staff_api.post("/api/v1/jobs/requeue", {"kind": "demo.sleep"}, format="json")

    assert response.status_code == 202
    assert response.json()["requeued"] == 3
    assert set(response.json()["ids"]) == {str(job.id) for job in dead}
    statuses = dict(Job.objects.values_list("id", "status"))
    assert {statuses[job.id] for job in dead} == {"queued"}
    assert statuses[failed.id] == "failed"
    assert statuses[other_kind.id] == "dead"


def test_staff_requeue_a_selection_by_ids(staff_api, user):
    picked, left = _job(user, "dead"), _job(user, "dead")

    response = staff_api.post("/api/v1/jobs/requeue", {"ids": [str(picked.id)]}, format="json")

    assert response.json()["requeued"] == 1
    picked.refresh_from_db()
    left.refresh_from_db()
    assert (picked.status, left.status) == ("queued", "dead")


def test_requeue_is_staff_only(api, user):
    job = _job(user, "dead")
    response = api.post("/api/v1/jobs/requeue", {"ids": [str(job.id)]}, format="json")
    assert response.status_code == 403
    assert "staff" in response.json()["error"]["message"]
    job.refresh_from_db()
    assert job.status == "dead"


@pytest.mark.parametrize(
    "body",
    [{}, {"status": "dead"}, {"ids": ["not-a-uuid"]}, {"kind": "x", "status": "running"}],
)
def test_requeue_with_bad_body_is_400(staff_api, body):
    response = staff_api.post("/api/v1/jobs/requeue", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]
