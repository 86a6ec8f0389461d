"""JSON logs: every line inside a job names the job; request lines carry a request id that
is also stored on the jobs the request submitted."""

import json
import logging
from pathlib import Path

import httpx
import pytest
from rest_framework.authtoken.models import Token

from jobs.logs import ContextFilter, JsonFormatter, log_context_clear, log_context_set
from jobs.models import Job
from tests.support import WebServer, wait_for


def json_lines(path: Path) -> list[dict]:
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))  # a line that starts like JSON must be JSON
    return entries


@pytest.mark.django_db
def test_submit_stores_and_returns_the_callers_request_id(api):
    response = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep"}, format="json", HTTP_X_REQUEST_ID="trace-42.a"
    )

    assert response.status_code == 202
    assert response["X-Request-ID"] == "trace-42.a"
    assert Job.objects.get(id=response.json()["id"]).request_id == "trace-42.a"


@pytest.mark.django_db
@pytest.mark.parametrize("given", ["", "has spaces", "x" * 65, "bad\u00e9"])
def test_a_missing_or_unusable_request_id_is_replaced_by_a_fresh_one(api, given):
    headers = {"HTTP_X_REQUEST_ID": given} if given else {}
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json", **headers)

    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert request_id != given
    assert Job.objects.get(id=response.json()["id"]).request_id == request_id


def test_json_formatter_writes_one_object_per_line_with_context_and_extra():
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "WARNING", "msg": "a %s\nb", "args": ("1",), "rows": 3}
    )
    log_context_set(job_id="j-1", kind="demo.sleep", attempt=2)
    try:
        ContextFilter().filter(record)
    finally:
        log_context_clear()
    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "a 1\nb"
    assert (entry["job_id"], entry["kind"], entry["attempt"], entry["rows"]) == (
        "j-1", "demo.sleep", 2, 3
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_logs_of_a_failing_job_are_json_and_carry_its_ids(worker, user, log_dir):
    token, _ = Token.objects.get_or_create(user=user)
    web = WebServer(log_dir=log_dir).start()
    try:
        response = httpx.post(
            f"{web.url}/api/v1/jobs",
            json={"kind": "demo.sleep", "params": {"fail": "error", "message": "disk full"}},
            headers={"Authorization": f"Token {token.key}", "X-Request-ID": "req-failing-1"},
        )
    finally:
        web.stop()
    assert response.status_code == 202
    job_id = response.json()["id"]
    wait_for(lambda: Job.objects.get(id=job_id).status == "failed", what="job failed")

    def job_lines() -> list[dict]:
        return [e for e in json_lines(worker.log_path) if e.get("job_id") == job_id]

    lines = wait_for(
        lambda: [e for e in job_lines() if e["level"] == "ERROR"] and job_lines(),
        what="the worker's error line for the job",
    )
    error = next(e for e in lines if e["level"] == "ERROR")
    assert error["kind"] == "demo.sleep"
    assert error["attempt"] == 1
    assert "disk full" in error["message"] + error.get("exc", "")
    requests = [e for e in json_lines(web.log_path) if e["logger"] == "offload.request"]
    request = next(e for e in requests if e["request_id"] == "req-failing-1")
    assert (request["method"], request["path"], request["status"]) == ("POST", "/api/v1/jobs", 202)
    assert Job.objects.get(id=job_id).request_id == "req-failing-1"
