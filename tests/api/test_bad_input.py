"""Bad, hostile and unauthorised input: a 4xx naming the problem, and nothing queued."""

import json

import pytest
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def _post(api, body, **extra):
    return api.post("/api/v1/jobs", body, content_type="application/json", **extra)


@pytest.fixture(autouse=True)
def nothing_queued():
    yield
    assert Job.objects.count() == 0, "a refused request left a job behind"


def test_malformed_json(api):
    response = _post(api, '{"kind": "demo.sleep", ')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert "JSON" in response.json()["error"]["message"]


def test_body_that_is_not_utf8(api):
    response = _post(api, b'{"kind": "\xff\xfe"}')
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]["message"]


def test_wrong_content_type(api):
    response = api.post("/api/v1/jobs", "kind=demo.sleep", content_type="text/plain")
    assert response.status_code == 415
    assert "text/plain" in response.json()["error"]["message"]


def test_json_that_is_not_an_object(api):
    response = _post(api, "[1, 2, 3]")
    assert response.status_code == 400


def test_unknown_kind(api):
    response = _post(api, json.dumps({"kind": "rm -rf /"}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_kind"
    assert "demo.sleep" in error["message"]  # names the kinds that exist


def test_missing_kind(api):
    response = _post(api, json.dumps({"params": {}}))
    assert response.status_code == 400
    assert "kind" in response.json()["error"]["fields"]


def test_unknown_field_is_named(api):
    response = _post(api, json.dumps({"kind": "demo.sleep", "prioritty": 3}))
    assert response.status_code == 400
    assert "prioritty" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"seconds": "soon"}, "seconds"),
        ({"seconds": -5}, "seconds"),
        ({"seconds": 10**9}, "seconds"),
        ({"fail": "explode"}, "fail"),
        ({"steps": 1.5}, "steps"),
    ],
)
def test_params_of_wrong_type_or_range(api, params, field):
    response = _post(api, json.dumps({"kind": "demo.sleep", "params": params}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert field in error["fields"]["params"]


@pytest.mark.parametrize("params", [[1, 2], "text", 3])
def test_params_that_are_not_an_object(api, params):
    response = _post(api, json.dumps({"kind": "demo.sleep", "params": params}))
    assert response.status_code == 400
    assert "params" in response.json()["error"]["fields"]


def test_params_over_the_size_cap(api):
    params = {"message": "x" * 100, "padding": "y" * 70_000}
    response = _post(api, json.dumps({"kind": "demo.sleep", "params": params}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "params_too_large"
    assert "65536" in error["message"]


def test_body_over_the_request_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = _post(api, json.dumps({"kind": "demo.sleep", "params": {"m": "z" * 20_000}}))
    assert response.status_code == 413
    assert "10000" in response.json()["error"]["message"]


@pytest.mark.parametrize("priority", [-1, 10, 255, "high", 1.5])
def test_priority_out_of_range(api, priority):
    response = _post(api, json.dumps({"kind": "demo.sleep", "priority": priority}))
    assert response.status_code == 400
    assert "priority" in response.json()["error"]["fields"]


def test_idempotency_key_over_255_characters(api):
    response = _post(api, json.dumps({"kind": "demo.sleep"}), HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert response.status_code == 400
    assert "255" in response.json()["error"]["message"]


def test_blank_idempotency_key(api):
    response = _post(api, json.dumps({"kind": "demo.sleep"}), HTTP_IDEMPOTENCY_KEY="   ")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "job_id", ["not-a-uuid", "1", "%27%3B DROP TABLE jobs_job%3B--", "x" * 500]
)
def test_job_id_that_is_not_a_uuid(api, job_id):
    for response in (
        api.get(f"/api/v1/jobs/{job_id}"),
        api.post(f"/api/v1/jobs/{job_id}/cancel"),
    ):
        assert response.status_code == 404
        assert "UUID" in response.json()["error"]["message"]


def test_callback_url_that_is_not_a_url(api):
    response = _post(api, json.dumps({"kind": "demo.sleep", "callback_url": "javascript:alert(1)"}))
    assert response.status_code == 400
    assert "callback_url" in response.json()["error"]["fields"]


def test_no_credentials_is_401():
    client = APIClient()
    response = client.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json")
    assert response.status_code == 401
    assert "Token" in response.json()["error"]["message"]
    assert client.get("/api/v1/jobs").status_code == 401


def test_bad_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0000000000000000000000000000000000000000")
    response = client.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_session_auth_without_csrf_token_is_refused(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_param_is_named_and_nothing_queued(api):
    response = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "params": {"secnds": 1}}, format="json"
    )

    assert response.status_code == 400
    body = response.json()["error"]
    assert body["fields"]["params"] == {"secnds": ["unknown field"]}
    assert "seconds" in body["message"]  # says what the kind takes
    assert not Job.objects.exists()
