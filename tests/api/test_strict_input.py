"""What fuzzing the API against its schema found, pinned: the API refuses what its schema
refuses, and the schema says what the API answers."""

import pytest

from jobs.models import Job
from notifications.models import Endpoint

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"seconds": False}, "seconds"),  # a boolean is not a number
        ({"seconds": "2"}, "seconds"),  # nor is a string
        ({"steps": 2.5}, "steps"),  # a whole number
        ({"message": 5}, "message"),  # a string
        ({"fail": ["error"]}, "fail"),  # a choice among strings
    ],
)
def test_params_of_the_wrong_json_type_are_a_400(api, params, field):
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep", "params": params}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert field in error["fields"]["params"]
    assert field in error["message"]
    assert Job.objects.count() == 0


def test_body_fields_of_the_wrong_json_type_are_a_400(api):
    wrong = api.post("/api/v1/jobs", {"kind": "demo.sleep", "priority": "5"}, format="json")
    flag = api.post(
        "/api/v1/webhooks/endpoints",
        {"url": "https://hooks.example.com/x", "enabled": 1},
        format="json",
    )

    assert wrong.status_code == 400
    assert "priority" in wrong.json()["error"]["fields"]
    assert flag.status_code == 400
    assert "enabled" in flag.json()["error"]["fields"]
    assert Job.objects.count() == 0
    assert Endpoint.objects.count() == 0


@pytest.mark.parametrize("size", ["0", "201", "-1", "abc", "2.5"])
def test_a_page_size_outside_its_range_is_a_400_not_clamped(api, size):
    for path in ("/api/v1/jobs", "/api/v1/webhooks/deliveries"):
        response = api.get(path, {"page_size": size})

        assert response.status_code == 400, (path, response.content)
        assert (
            "page_size must be a whole number from 1 to 200" in response.json()["error"]["message"]
        )


def test_a_page_size_in_range_is_honoured(api, user):
    for _ in range(3):
        Job.objects.create(kind="demo.sleep", owner=user)

    response = api.get("/api/v1/jobs", {"page_size": "2"})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/a\x14b", "http://exa mple.com/", "http://bücher.example/x"],
)
def test_urls_with_control_spaces_or_non_ascii_are_refused(api, url):
    submit = api.post("/api/v1/jobs", {"kind": "demo.sleep", "callback_url": url}, format="json")
    endpoint = api.post("/api/v1/webhooks/endpoints", {"url": url}, format="json")

    assert submit.status_code == 400
    assert "xn--" in submit.json()["error"]["fields"]["callback_url"][0]
    assert endpoint.status_code == 400
    assert Job.objects.count() == 0
    assert Endpoint.objects.count() == 0


def test_an_upload_with_unknown_form_fields_is_a_400(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    csv = SimpleUploadedFile("a.csv", b"email\na@example.com\n", content_type="text/csv")
    response = api.post("/api/v1/uploads", {"file": csv, "note": "x"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"note": ["unknown field"]}


def test_the_schema_lists_only_the_kinds_the_reader_may_submit(api, staff_api):
    def kinds(client) -> set[str]:
        schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()
        mapping = schema["components"]["schemas"]["JobSubmitRequest"]["discriminator"]["mapping"]
        return set(mapping)

    mine, staff = kinds(api), kinds(staff_api)

    assert {"cleanup", "reaper"} <= staff
    assert "cleanup" not in mine
    assert "reaper" not in mine
    assert "demo.sleep" in mine
    assert staff - mine == {"cleanup", "reaper", "webhook.deliver"}


@pytest.mark.parametrize("field", ["interval_seconds", "expire_seconds"])
def test_a_schedule_number_beyond_its_column_is_a_400(staff_api, field):
    body = {"name": "huge", "kind": "cleanup", "interval_seconds": 60, field: 2**42}

    response = staff_api.post("/api/v1/schedules", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
