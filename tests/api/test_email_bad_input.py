"""Bad, hostile and unauthorised input to the `email` and `email_campaign` kinds: a 4xx
at submit naming the problem, and no job, no ledger row, nothing sent."""

import re

import pytest
from django.test import override_settings

from jobs.models import FilePurpose, Job, StoredFile
from notifications.models import EmailSend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def nothing_written():
    yield
    assert Job.objects.count() == 0, "a refused request left a job behind"
    assert EmailSend.objects.count() == 0


def _email(client, **params):
    body = {"template": "reminder", "to": ["a@example.org"], "context": {"message": "hi"}}
    body.update(params)
    return client.post("/api/v1/jobs", {"kind": "email", "params": body}, format="json")


def _fields(response) -> str:
    error = response.json()["error"]
    return f"{error['message']} {error['fields']}"


def test_unknown_template(api):
    response = _email(api, template="no_such_template")
    assert response.status_code == 400
    assert "no_such_template" in _fields(response)
    assert "reminder" in _fields(response)  # the built-in names are listed


@pytest.mark.parametrize("name", ["../../etc/passwd", "Reminder", "", "a" * 65, "x y"])
def test_template_name_that_is_not_a_name(api, name):
    response = _email(api, template=name)
    assert response.status_code == 400
    assert "template" in response.json()["error"]["fields"]["params"]


def test_template_syntax_error(api):
    response = _email(api, template="broken_syntax")
    assert response.status_code == 400
    assert "does not compile" in _fields(response)


def test_missing_context_variable_is_named(api):
    response = _email(api, context={})
    assert response.status_code == 400
    assert "uses message" in _fields(response)


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "a@b@c.org",
        "a@example.org, b@example.org",
        "",
        "Ann <>",
        "x" * 330 + "@example.org",
        17,
    ],
)
def test_invalid_recipient_addresses(api, address):
    response = _email(api, to=["ok@example.org", address])
    assert response.status_code == 400
    assert "to" in response.json()["error"]["fields"]["params"]


@pytest.mark.parametrize(
    "address",
    [
        "Eve\r\nBcc: victim@example.org <eve@example.org>",
        "eve@example.org\nBcc: victim@example.org",
        "Eve\x00 <eve@example.org>",
    ],
)
def test_header_injection_through_a_name_or_address(api, address):
    response = _email(api, to=[address])
    assert response.status_code == 400
    assert re.search(r"line break|Null characters", _fields(response))


@pytest.mark.parametrize("value", ["Renew\r\nBcc: victim@example.org", "Renew\nX-Evil: 1"])
def test_header_injection_through_the_subject(api, value):
    response = _email(api, context={"message": "hi", "title": value})
    assert response.status_code == 400
    assert "CR/LF" in _fields(response)


def test_oversized_recipient_list(api):
    with override_settings(OFFLOAD_EMAIL_MAX_RECIPIENTS=5):
        response = _email(api, to=[f"r{i}@example.org" for i in range(6)])
    assert response.status_code == 400
    assert "email_campaign" in _fields(response)


def test_huge_recipient_list_is_refused_by_size(api):
    response = _email(api, to=[f"reader{i}@example.org" for i in range(5000)])
    assert response.status_code == 400


def test_attachments_by_a_non_staff_user(api, staff_user):
    stored = StoredFile.objects.create(
        owner=staff_user,
        purpose=FilePurpose.UPLOAD,
        storage_name="private/report.pdf",
        content_type="application/pdf",
        size=10,
        sha256="0" * 64,
    )
    response = _email(api, attachments=[str(stored.id)])
    assert response.status_code == 400
    assert "only staff" in _fields(response)
    stored.delete()


def test_attachment_that_does_not_exist(staff_api):
    response = _email(staff_api, attachments=["0b7e6f8e-6a43-4d6f-9d1a-1f1e2a3b4c5d"])
    assert response.status_code == 400
    assert "no stored file" in _fields(response)


def test_attachment_id_that_is_not_an_id(staff_api):
    response = _email(staff_api, attachments=["../../etc/passwd"])
    assert response.status_code == 400


def test_context_that_is_not_an_object(api):
    response = _email(api, context=["message"])
    assert response.status_code == 400


def test_unknown_params_field(api):
    response = _email(api, **{"from": "ceo@example.org"})
    assert response.status_code == 400
    assert "from" in _fields(response)


def _campaign(client, **params):
    body = {"template": "newsletter", "context": {"subject": "News", "message": "hi"}}
    body.update(params)
    return client.post("/api/v1/jobs", {"kind": "email_campaign", "params": body}, format="json")


def test_campaign_is_staff_only(api):
    response = _campaign(api)
    assert response.status_code == 403
    assert "staff" in response.json()["error"]["message"]


def test_campaign_chunk_is_staff_only(api):
    response = api.post(
        "/api/v1/jobs",
        {
            "kind": "email_campaign.chunk",
            "params": {"campaign": "0b7e6f8e-6a43-4d6f-9d1a-1f1e2a3b4c5d", "index": 0,
                       "contacts": [1]},
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"template": "nope"}, "nope"),
        ({"template": "broken_syntax"}, "does not compile"),
        ({"context": {"message": "hi"}}, "uses subject"),
        ({"context": {"subject": "a\r\nBcc: x@example.org", "message": "hi"}}, "CR/LF"),
        ({"filter": {"country": ["DEU"]}}, "country"),
        ({"filter": {"region": "EU"}}, "region"),
        ({"filter": "DE"}, "filter"),
    ],
)
def test_bad_campaign_params(staff_api, params, word):
    response = _campaign(staff_api, **params)
    assert response.status_code == 400
    assert word in _fields(response)
