"""Hot paths have their query counts pinned so they cannot creep up unnoticed."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def _sql(queries) -> list[str]:
    return [q["sql"].split()[0] for q in queries]


def test_submit_is_one_auth_read_and_one_insert(api):
    api.get("/api/v1/jobs")  # warm up: the first request loads content types etc.
    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json")
    assert response.status_code == 202
    assert _sql(queries) == ["SELECT", "INSERT"], [q["sql"] for q in queries]


def test_submit_with_idempotency_key_adds_one_lookup(api):
    api.get("/api/v1/jobs")
    with CaptureQueriesContext(connection) as queries:
        api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json", HTTP_IDEMPOTENCY_KEY="q")
    assert _sql(queries) == ["SELECT", "SELECT", "INSERT"], [q["sql"] for q in queries]


def test_bulk_submit_of_100_jobs_is_one_insert_in_one_transaction(api):
    api.get("/api/v1/jobs")
    with CaptureQueriesContext(connection) as queries:
        response = api.post(
            "/api/v1/jobs/bulk", {"jobs": [{"kind": "demo.sleep"}] * 100}, format="json"
        )
    assert response.status_code == 202
    assert _sql(queries) == ["SELECT", "BEGIN", "INSERT", "COMMIT"], [q["sql"] for q in queries]


def test_status_read_is_one_auth_read_and_one_job_read(api, user):
    job = Job.objects.create(kind="demo.sleep", owner=user)
    api.get(f"/api/v1/jobs/{job.id}")
    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"/api/v1/jobs/{job.id}")
    assert response.status_code == 200
    assert len(queries) == 2, [q["sql"] for q in queries]


def test_list_is_constant_in_the_number_of_jobs(api, user):
    Job.objects.bulk_create([Job(kind="demo.sleep", owner=user) for _ in range(40)])
    api.get("/api/v1/jobs")
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/jobs?page_size=40")
    assert len(response.json()["results"]) == 40
    assert len(queries) == 2, [q["sql"] for q in queries]
