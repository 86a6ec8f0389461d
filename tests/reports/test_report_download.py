"""Signed download links of reports: the owner and staff download; another user, an
expired link, a tampered signature, a deleted file and no login are refused with a clear
message; a fresh link can be asked for."""

import time

import pytest
from django.core import signing
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from jobs.models import Job, StoredFile
from reports import links, services

pytestmark = pytest.mark.django_db

PARAMS = {"type": "job_stats", "format": "csv", "start": "2026-03-10", "end": "2026-03-10",
          "all_users": False}  # fmt: skip


@pytest.fixture
def report(user):
    job = Job.objects.create(kind="report", owner=user, params=PARAMS)
    made = services.report_make(params=PARAMS, owner_id=user.id, job_id=job.id,
                                progress=lambda *a: None)  # fmt: skip
    return services.report_result(params=PARAMS, made=made)


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def _stored(report) -> StoredFile:
    return StoredFile.objects.get(id=report["file"])


def test_the_owner_downloads_through_the_link(api, report):
    response = api.get(report["url"])

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert (
        'attachment; filename="job-stats-2026-03-10-2026-03-10.csv"'
        in response["Content-Disposition"]
    )
    assert response["Cache-Control"] == "private, no-store"
    body = _body(response)
    assert body.startswith(b"# summary\r\n")
    assert len(body) == report["bytes"] == _stored(report).size


def test_staff_download_anyones_report(staff_api, report):
    response = staff_api.get(report["url"])

    assert response.status_code == 200
    assert _body(response).startswith(b"# summary")


def test_another_user_is_refused(other_api, report):
    response = other_api.get(report["url"])

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "not_owner"
    assert error["message"] == (
        "This report belongs to another user; only its owner or staff may download it."
    )


def test_no_login_is_a_401(report):
    anonymous = APIClient()

    assert anonymous.get(report["url"]).status_code == 401
    assert anonymous.post(f"/api/v1/reports/files/{report['file']}/link").status_code == 401


def test_an_expired_link_is_gone(api, report):
    url, _ = links.link_make(file_id=report["file"], ttl=-1)

    response = api.get(url)

    assert response.status_code == 410
    error = response.json()["error"]
    assert error["code"] == "link_expired"
    assert error["message"].startswith("This download link expired at ")
    assert f"POST /api/v1/reports/files/{report['file']}/link" in error["message"]


def test_the_expiry_is_the_settings_ttl(report, settings):
    settings.OFFLOAD_REPORT_LINK_TTL_SECONDS = 60
    _, expires = links.link_make(file_id=report["file"])

    assert abs(expires.timestamp() - (time.time() + 60)) < 5


def test_another_user_with_an_expired_link_is_refused_as_not_owner(other_api, report):
    url, _ = links.link_make(file_id=report["file"], ttl=-1)

    assert other_api.get(url).json()["error"]["code"] == "not_owner"


def _tampered_tokens(report) -> list[str]:
    token = report["url"].rsplit("/", 1)[1]
    payload, stamp, signature = token.rsplit(":", 2)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    later = signing.b64_encode(
        f'{{"f":"{report["file"]}","e":{int(time.time()) + 10**8}}}'.encode()
    ).decode()
    return [
        f"{payload}:{stamp}:{flipped}",  # another signature
        f"{later}:{stamp}:{signature}",  # a later expiry under the old signature
        signing.dumps({"f": report["file"], "e": 2**40}, salt="another.salt"),
        signing.dumps({"f": report["file"], "e": 2**40}, salt=links.SALT, key="not-the-key"),
        "garbage",
        token[:-10],
        "x" * 10_000,
        f"{token}:{signature}",
    ]


def test_a_tampered_signature_is_refused(api, report):
    for token in _tampered_tokens(report):
        response = api.get(f"/api/v1/reports/download/{token}")

        assert response.status_code == 403, token
        error = response.json()["error"]
        assert error["code"] == "bad_signature"
        assert "signature does not match" in error["message"]


def test_a_deleted_file_is_gone(api, report):
    _stored(report).delete()

    response = api.get(report["url"])

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "file_deleted"


def test_a_file_gone_from_storage_is_gone(api, report):
    default_storage.delete(_stored(report).storage_name)

    response = api.get(report["url"])

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "file_deleted"


def test_a_fresh_link_for_the_owner_and_staff_only(api, staff_api, other_api, report):
    for client in (api, staff_api):
        response = client.post(f"/api/v1/reports/files/{report['file']}/link")
        assert response.status_code == 200
        fresh = response.json()
        assert fresh["url"].startswith("http://testserver/api/v1/reports/download/")
        assert client.get(fresh["url"]).status_code == 200

    refused = other_api.post(f"/api/v1/reports/files/{report['file']}/link")
    assert refused.status_code == 403
    assert api.post("/api/v1/reports/files/not-a-uuid/link").status_code == 404
    missing = api.post("/api/v1/reports/files/00000000-0000-0000-0000-000000000000/link")
    assert missing.status_code == 404


def test_only_report_files_have_links(api, user, report):
    job = Job.objects.get(id=_stored(report).job_id)
    StoredFile.objects.filter(id=report["file"]).update(purpose="upload")

    assert api.post(f"/api/v1/reports/files/{report['file']}/link").status_code == 404
    assert api.get(report["url"]).status_code == 410
    assert job.owner_id == user.id
