"""/api/v1/schedules (staff) and the bad inputs of schedules and delayed submits."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def _create(client, **body):
    payload = {"name": "nightly-demo", "kind": "demo.sleep", "params": {"seconds": 1}, **body}
    return client.post("/api/v1/schedules", payload, format="json")


def test_staff_creates_lists_and_deletes_a_schedule(staff_api):
    response = _create(staff_api, crontab={"minute": "0", "hour": "2", "timezone": "Europe/Berlin"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "demo.sleep"
    assert body["overlap"] == "skip"
    assert body["params"]["seconds"] == 1.0
    task = PeriodicTask.objects.get(name="nightly-demo")
    assert str(task.crontab.timezone) == "Europe/Berlin"
    listed = staff_api.get("/api/v1/schedules").json()["schedules"]
    assert [item["name"] for item in listed] == ["nightly-demo"]
    assert staff_api.delete("/api/v1/schedules/nightly-demo").status_code == 204
    assert not PeriodicTask.objects.exists()


def test_non_staff_gets_403(api):
    assert api.get("/api/v1/schedules").status_code == 403
    assert _create(api, interval_seconds=60).status_code == 403
    assert not PeriodicTask.objects.exists()


@pytest.mark.parametrize(
    ("body", "code", "field", "words"),
    [
        ({"crontab": {"minute": "61"}}, "invalid_crontab", "crontab", "Invalid crontab"),
        ({"crontab": {"hour": "*/x"}}, "invalid_crontab", "crontab", "Invalid crontab"),
        ({"crontab": {"timezone": "Mars/Base"}}, "invalid_crontab", "crontab", "time zone"),
        ({"kind": "nope", "interval_seconds": 60}, "unknown_kind", "kind", "Unknown job kind"),
        (
            {"params": {"seconds": -1}, "interval_seconds": 60},
            "invalid_params",
            "params",
            "not valid for kind",
        ),
        ({"clocked_at": "2001-01-01T00:00:00Z"}, "clocked_in_past", "clocked", "in the past"),
        ({}, "invalid", "schedule", "exactly one"),
        ({"interval_seconds": 5, "crontab": {"minute": "1"}}, "invalid", "schedule", "exactly"),
    ],
)
def test_bad_schedules_are_refused_and_nothing_is_saved(staff_api, body, code, field, words):
    response = _create(staff_api, **body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert field in error["fields"]
    assert words in error["message"]
    assert not PeriodicTask.objects.exists()
    assert not CrontabSchedule.objects.exists()
    assert not ClockedSchedule.objects.exists()


def test_a_duplicate_name_is_a_409(staff_api):
    assert _create(staff_api, interval_seconds=60).status_code == 201
    response = _create(staff_api, interval_seconds=30)
    assert response.status_code == 409
    assert PeriodicTask.objects.get().interval.every == 60


# --- delayed submits ---------------------------------------------------------------------


def test_countdown_and_run_at_keep_the_job_scheduled(api):
    at = timezone.now() + timedelta(hours=3)
    by_time = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "run_at": at.isoformat()}, format="json"
    )
    by_countdown = api.post("/api/v1/jobs", {"kind": "demo.sleep", "countdown": 90}, format="json")

    assert by_time.status_code == 202
    assert by_countdown.status_code == 202
    assert by_time.json()["status"] == "scheduled"
    assert by_countdown.json()["status"] == "scheduled"
    job = Job.objects.get(id=by_countdown.json()["id"])
    assert timedelta(seconds=85) < job.run_at - timezone.now() <= timedelta(seconds=90)


def test_a_run_at_just_past_runs_at_once(api):
    at = timezone.now() - timedelta(seconds=5)
    response = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "run_at": at.isoformat()}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_cancel_a_scheduled_job(api):
    body = api.post("/api/v1/jobs", {"kind": "demo.sleep", "countdown": 600}, format="json").json()
    response = api.post(f"/api/v1/jobs/{body['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"run_at": "+400d"}, "run_at", "more than a year ahead"),
        ({"run_at": "-1h"}, "run_at", "in the past"),
        ({"countdown": -1}, "countdown", "countdown must be from 0"),
        ({"countdown": 400 * 86400}, "countdown", "one year"),
        ({"countdown": 10, "run_at": "+1h"}, "countdown", "not both"),
    ],
)
def test_bad_run_at_is_refused_and_nothing_is_recorded(api, extra, field, words):
    offsets = {"+400d": timedelta(days=400), "-1h": timedelta(hours=-1), "+1h": timedelta(hours=1)}
    body = {"kind": "demo.sleep"}
    for name, value in extra.items():
        body[name] = (timezone.now() + offsets[value]).isoformat() if name == "run_at" else value

    response = api.post("/api/v1/jobs", body, format="json")
    bulk = api.post("/api/v1/jobs/bulk", {"jobs": [{"kind": "demo.sleep"}, body]}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"]
    assert words in error["message"]
    assert bulk.status_code == 400
    assert "1" in bulk.json()["error"]["fields"]["jobs"]
    assert not Job.objects.exists()
