"""Submitting a report with bad, hostile or unauthorised params: a 400 (or 403) naming the
problem at submit, and no job recorded."""

import json

import pytest

from jobs.models import Job
from reports.params import ReportParams

pytestmark = pytest.mark.django_db(transaction=True)

STATS = {"type": "job_stats", "format": "csv", "start": "2026-03-01", "end": "2026-03-31"}
EXPORT = {"type": "contacts_export", "format": "csv"}


def _submit(client, params):
    body = json.dumps({"kind": "report", "params": params})
    return client.post("/api/v1/jobs", body, content_type="application/json")


@pytest.fixture(autouse=True)
def nothing_recorded():
    yield
    assert Job.objects.count() == 0, "a refused submit left a job behind"


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({**STATS, "type": "sales"}, "type", "not a valid choice"),
        ({**STATS, "format": "docx"}, "format", "not a valid choice"),
        ({**STATS, "format": None}, "format", "null"),
        ({**STATS, "end": "2026-02-28"}, "end", "before start"),
        ({**STATS, "start": "2024-01-01", "end": "2026-01-01"}, "end", "at most 366"),
        ({**STATS, "start": "yesterday"}, "start", "Date has wrong format"),
        ({**STATS, "start": "2026-02-30"}, "start", "Date has wrong format"),
        ({k: v for k, v in STATS.items() if k != "end"}, "end", "required for job_stats"),
        ({**STATS, "filters": {"country": ["GB"]}}, "filters", "takes no filters"),
        ({**STATS, "start": ["2026-03-01"]}, "start", "Date has wrong format"),
        ({**STATS, "start": "9999-12-31", "end": "9999-12-31"}, "start", "between 1970-01-01"),
        ({**STATS, "start": "1969-12-31", "end": "1970-01-01"}, "start", "between 1970-01-01"),
    ],
)
def test_bad_job_stats_params_are_a_400_naming_the_field(api, params, field, says):
    response = _submit(api, params)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert says in json.dumps(error["fields"]["params"][field])


def test_the_range_limit_is_a_setting(api, settings):
    settings.OFFLOAD_REPORT_MAX_RANGE_DAYS = 7
    response = _submit(api, {**STATS, "start": "2026-03-01", "end": "2026-03-08"})

    assert response.status_code == 400
    assert "the range is 8 days; at most 7" in json.dumps(response.json()["error"]["fields"])


@pytest.mark.parametrize(
    ("filters", "path"),
    [
        ("GB", ["filters", "non_field_errors"]),
        ({"country": "GB"}, ["filters", "country"]),
        ({"country": ["GBR"]}, ["filters", "country"]),
        ({"country": ["G1"]}, ["filters", "country"]),
        ({"country": []}, ["filters", "country"]),
        ({"country": ["GB"] * 301}, ["filters", "country"]),
        ({"subscribed": "maybe"}, ["filters", "subscribed"]),
        ({"attributes": ["plan"]}, ["filters", "attributes"]),
        ({"attributes": {"plan": {"$ne": 1}}}, ["filters", "attributes"]),
        ({"attributes": {"plan": None}}, ["filters", "attributes"]),
        ({"attributes": {"": "x"}}, ["filters", "attributes"]),
        ({"attributes": {"k" * 101: "x"}}, ["filters", "attributes"]),
        ({"attributes": {"plan": "x" * 201}}, ["filters", "attributes"]),
        ({"attributes": {f"k{i}": i for i in range(21)}}, ["filters", "attributes"]),
        ({"email": "%@example.com"}, ["filters", "email"]),
    ],
)
def test_malformed_export_filters_are_a_400_naming_the_filter(staff_api, filters, path):
    response = _submit(staff_api, {**EXPORT, "filters": filters})

    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]["params"]
    for key in path:
        fields = fields[key]
    assert fields


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({**EXPORT, "format": "pdf"}, "format"),
        ({**EXPORT, "start": "2026-03-01"}, "start"),
        ({**EXPORT, "all_users": True}, "all_users"),
    ],
)
def test_export_params_that_do_not_apply_are_refused(staff_api, params, field):
    response = _submit(staff_api, params)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]["params"]


def test_a_user_may_not_export_contacts(api):
    response = _submit(api, EXPORT)

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only staff may export contacts."


def test_a_user_may_not_count_every_users_jobs(api):
    response = _submit(api, {**STATS, "all_users": True})

    assert response.status_code == 403
    assert "Only staff may count every user's jobs" in response.json()["error"]["message"]


def test_unknown_params_are_named(api):
    response = _submit(api, {**STATS, "owner": 1})

    assert response.status_code == 400
    assert "owner" in response.json()["error"]["fields"]["params"]


@pytest.mark.parametrize("day", ["9999-12-31", "1900-01-01", "2026-02-30", "today", 20260310])
def test_a_bad_daily_report_date_is_a_400(staff_api, day):
    body = json.dumps({"kind": "report.daily", "params": {"date": day}})
    response = staff_api.post("/api/v1/jobs", body, content_type="application/json")

    assert response.status_code == 400
    assert "date" in response.json()["error"]["fields"]["params"]


def test_a_user_may_not_submit_the_daily_report(api):
    body = json.dumps({"kind": "report.daily", "params": {}})
    response = api.post("/api/v1/jobs", body, content_type="application/json")

    assert response.status_code == 403


def test_what_staff_and_users_may_ask_for(user, staff_user):
    def valid(params, owner):
        return ReportParams(data=params, context={"owner": owner}).is_valid()

    assert valid(STATS, user)
    assert valid({**STATS, "all_users": True}, staff_user)
    assert valid({**EXPORT, "filters": {"country": ["gb"]}}, staff_user)
    assert valid({**EXPORT, "format": "xlsx"}, None)  # a system job (a schedule's run)
    serializer = ReportParams(data={**EXPORT, "filters": {"country": ["gb"]}},
                              context={"owner": staff_user})  # fmt: skip
    serializer.is_valid()
    assert serializer.validated_data["filters"]["country"] == ["GB"]
