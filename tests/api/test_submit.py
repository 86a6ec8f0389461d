"""POST /api/v1/jobs and /api/v1/jobs/bulk."""

import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_submit_answers_202_with_location_and_links(api, user):
    response = api.post(
        "/api/v1/jobs",
        {"kind": "demo.sleep", "params": {"seconds": 1}, "priority": 7},
        format="json",
    )

    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(id=body["id"])
    assert response["Location"] == f"http://testserver/api/v1/jobs/{job.id}"
    assert body["status"] == "queued"
    assert body["links"]["cancel"].endswith(f"/api/v1/jobs/{job.id}/cancel")
    assert (job.owner, job.kind, job.priority, job.queue) == (user, "demo.sleep", 7, "default")
    # params are stored validated, defaults filled in
    assert job.params == {
        "seconds": 1.0,
        "steps": 10,
        "fail": "",
        "fail_attempts": 1,
        "message": "",
    }


def test_default_priority_comes_from_the_kind(api):
    body = api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json").json()
    assert body["priority"] == 0


def test_same_idempotency_key_and_body_returns_the_same_job(api):
    request = {"kind": "demo.sleep", "params": {"seconds": 2}}
    first = api.post("/api/v1/jobs", request, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post("/api/v1/jobs", request, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_409(api):
    api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    response = api.post(
        "/api/v1/jobs",
        {"kind": "demo.sleep", "params": {"seconds": 5}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-2",
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_idempotency_keys_are_per_user(api, other_api):
    request = {"kind": "demo.sleep"}
    mine = api.post("/api/v1/jobs", request, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    theirs = other_api.post("/api/v1/jobs", request, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


def test_bulk_submit_queues_every_job(api, user):
    jobs = [{"kind": "demo.sleep", "params": {"seconds": i}} for i in range(25)]

    response = api.post("/api/v1/jobs/bulk", {"jobs": jobs}, format="json")

    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]
    assert len(ids) == 25
    stored = Job.objects.filter(id__in=ids, owner=user, status="queued")
    assert sorted(job.params["seconds"] for job in stored) == list(range(25))


def test_bulk_submit_with_one_bad_item_queues_nothing(api):
    jobs = [{"kind": "demo.sleep"}, {"kind": "demo.sleep", "params": {"seconds": -1}}]

    response = api.post("/api/v1/jobs/bulk", {"jobs": jobs}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert "1" in error["fields"]["jobs"]
    assert "seconds" in str(error["fields"]["jobs"]["1"])
    assert Job.objects.count() == 0


def test_bulk_submit_names_each_bad_item_and_only_those(api):
    """One params serializer serves a whole batch: an item's errors must not leak into the
    next item, and each item is validated against its own params."""
    jobs = [
        {"kind": "demo.sleep", "params": {"seconds": 1}},
        {"kind": "demo.sleep", "params": {"seconds": -1}},
        {"kind": "demo.sleep", "params": {"steps": 2}},
        {"kind": "demo.sleep", "params": {"steps": 0}},
        {"kind": "demo.sleep", "params": {"seconds": 2, "steps": 3}},
    ]

    response = api.post("/api/v1/jobs/bulk", {"jobs": jobs}, format="json")

    assert response.status_code == 400
    fields = response.json()["error"]["fields"]["jobs"]
    assert sorted(fields) == ["1", "3"]
    assert list(fields["1"]["params"]) == ["seconds"]
    assert list(fields["3"]["params"]) == ["steps"]
    assert Job.objects.count() == 0

    # Validated in one batch, each item stores what it stores when submitted on its own.
    good = [jobs[0], jobs[2], jobs[4]]
    response = api.post("/api/v1/jobs/bulk", {"jobs": good}, format="json")
    assert response.status_code == 202
    in_bulk = [Job.objects.get(id=job["id"]).params for job in response.json()["jobs"]]
    alone = []
    for job in good:
        single = api.post("/api/v1/jobs", job, format="json")
        assert single.status_code == 202
        alone.append(Job.objects.get(id=single.json()["id"]).params)
    assert in_bulk == alone
    assert [(p["seconds"], p["steps"]) for p in in_bulk] == [(1.0, 10), (0.0, 2), (2.0, 3)]


def test_bulk_submit_over_the_limit_is_refused(api, settings):
    settings.OFFLOAD_BULK_MAX = 3
    response = api.post("/api/v1/jobs/bulk", {"jobs": [{"kind": "demo.sleep"}] * 4}, format="json")

    assert response.status_code == 400
    assert "at most 3" in str(response.json()["error"])
    assert Job.objects.count() == 0


def test_bulk_submit_refuses_idempotency_key(api):
    response = api.post(
        "/api/v1/jobs/bulk",
        {"jobs": [{"kind": "demo.sleep"}]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="x",
    )
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_session_auth_with_csrf_token_submits(user):
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/api/v1/jobs",
        {"kind": "demo.sleep"},
        format="json",
        HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret),
    )

    assert response.status_code == 202
    assert Job.objects.get(id=response.json()["id"]).owner == user
