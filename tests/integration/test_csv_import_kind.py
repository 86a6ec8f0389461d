"""The csv_import kind end to end: upload, submit, a real worker on RabbitMQ and
PostgreSQL. Good files upsert; bad rows are reported, not fatal; bad files fail at once
with nothing written; counts always add up to what is in the table."""

import csv
import io

import pytest
from django.conf import settings

from jobs.models import Job, StoredFile
from notifications.contact_csv import batch_sizes
from notifications.models import Contact
from tests.files import contacts_csv, upload
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HEADER = "email,first_name,last_name,phone,country,plan"


def _import(client, content: bytes, timeout: float = 120, **params) -> Job:
    response = upload(client, "contacts.csv", content, "text/csv")
    assert response.status_code == 201, response.content
    return _run(client, response.json()["id"], timeout=timeout, **params)


def _submit(client, upload_id, **params) -> str:
    response = client.post(
        "/api/v1/jobs",
        {"kind": "csv_import", "params": {"upload": upload_id, **params}},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _final(job_id, timeout: float = 120) -> Job:
    def done():
        job = Job.objects.get(id=job_id)
        return job if job.is_finished else None

    return wait_for(done, timeout=timeout, what=f"job {job_id} to finish")


def _run(client, upload_id, timeout: float = 120, **params) -> Job:
    return _final(_submit(client, upload_id, **params), timeout=timeout)


def _counts(job: Job) -> dict:
    keys = ("rows", "inserted", "updated", "unchanged", "duplicates", "rejected")
    return {key: job.result[key] for key in keys}


def _report(client, job: Job) -> list[dict]:
    response = client.get(job.result["error_report"]["url"])
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_import_then_the_same_file_again_changes_nothing(worker, api):
    Contact.objects.create(email="ann@example.com", first_name="Old", attributes={"src": "crm"})
    data = (
        "\ufeffE-Mail,First Name,LAST_NAME,Phone,Country,Plan\r\n"
        "ANN@Example.com,Ann,Lee,+1 555 0100,us,gold\r\n"
        "bob@example.com,Bob,Ray,,gb,\r\n"
        "cy@example.com,Cy,,,,silver\r\n"
    ).encode()
    upload_id = upload(api, "c.csv", data, "text/csv").json()["id"]

    first = _run(api, upload_id)

    assert first.status == "succeeded", first.error
    assert _counts(first) == {
        "rows": 3, "inserted": 2, "updated": 1, "unchanged": 0, "duplicates": 0, "rejected": 0,
    }  # fmt: skip
    assert first.result["error_report"] is None
    assert first.result["columns"]["E-Mail"] == "email"
    assert (first.progress_current, first.progress_total) == (3, 3)
    ann = Contact.objects.get(email="ann@example.com")
    assert (ann.first_name, ann.last_name) == ("Ann", "Lee")
    assert (ann.phone, ann.country) == ("+1 555 0100", "US")
    assert ann.attributes == {"src": "crm", "Plan": "gold"}  # merged, not replaced
    assert Contact.objects.get(email="bob@example.com").attributes == {}

    again = _run(api, upload_id)

    assert _counts(again) == {
        "rows": 3, "inserted": 0, "updated": 0, "unchanged": 3, "duplicates": 0, "rejected": 0,
    }  # fmt: skip
    assert Contact.objects.count() == 3
    assert Contact.objects.get(email="ann@example.com").updated_at == ann.updated_at


def test_invalid_rows_go_to_the_error_report_and_do_not_fail_the_job(worker, api):
    data = "\n".join([
        HEADER,
        "good1@example.com,A,B,,GB,",
        "not-an-email,A,B,,GB,",
        "long@example.com," + "N" * 151 + ",B,,GB,",
        "country@example.com,A,B,,GBR,",
        ",A,B,,GB,",
        "fields@example.com,A,B",
        "phone@example.com,A,B,call me,GB,",
        "good2@example.com,A,B,,,",
    ]).encode() + b"\n"  # fmt: skip

    job = _import(api, data)

    assert job.status == "succeeded", job.error
    assert _counts(job) == {
        "rows": 8, "inserted": 2, "updated": 0, "unchanged": 0, "duplicates": 0, "rejected": 6,
    }  # fmt: skip
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "good1@example.com",
        "good2@example.com",
    ]
    report = _report(api, job)
    assert [(r["line"], r["column"]) for r in report] == [
        ("3", "email"),
        ("4", "first_name"),
        ("5", "country"),
        ("6", "email"),
        ("7", ""),
        ("8", "phone"),
    ]
    assert report[0]["message"] == "not a valid email address"
    assert report[1]["message"] == "longer than 150 characters"
    assert report[3]["message"] == "email is required"
    assert report[4]["message"] == "3 fields; the header has 6"
    assert StoredFile.objects.get(id=job.result["error_report"]["file"]).owner_id is not None


def test_duplicate_emails_in_one_file_last_wins_and_are_counted(worker, api):
    data = "\n".join([
        HEADER,
        "dup@example.com,First,One,,,",
        "other@example.com,O,O,,,",
        "DUP@example.com,Second,Two,,,",
        "dup@example.com,Third,Three,,,",
    ]).encode()  # fmt: skip

    job = _import(api, data)

    assert _counts(job) == {
        "rows": 4, "inserted": 2, "updated": 0, "unchanged": 0, "duplicates": 2, "rejected": 0,
    }  # fmt: skip
    dup = Contact.objects.get(email="dup@example.com")
    assert (dup.first_name, dup.last_name) == ("Third", "Three")


def test_an_unmatched_quote_rejects_one_record_and_the_rest_is_counted(worker, api):
    data = "\n".join([
        HEADER,
        "a@example.com,A,A,,,",
        'b@example.com,"Bob"by,B,,,',  # text after a closing quote
        "c@example.com,C,C,,,",
        'd@example.com,"Unclosed,D,,,',  # runs to the end of the file
        "e@example.com,E,E,,,",
        "f@example.com,F,F,,,",
    ]).encode() + b"\n"  # fmt: skip

    job = _import(api, data)

    assert job.status == "succeeded", job.error
    assert _counts(job) == {
        "rows": 4, "inserted": 2, "updated": 0, "unchanged": 0, "duplicates": 0, "rejected": 2,
    }  # fmt: skip
    assert Contact.objects.count() == 2
    report = _report(api, job)
    assert [r["line"] for r in report] == ["3", "5"]
    assert "lines 5-7 rejected as one record" in report[1]["message"]


def test_a_10_mb_field_is_rejected_as_one_record(worker, api):
    field = ("x" * 999 + "\n") * 10_500  # a quoted field of ~10 MB over many lines
    data = (
        f'{HEADER}\na@example.com,A,A,,,\nbig@example.com,"{field}",B,,,\nc@example.com,C,C,,,\n'
    ).encode()
    assert len(data) > 10_000_000

    job = _import(api, data)

    assert job.status == "succeeded", job.error
    assert _counts(job) == {
        "rows": 3, "inserted": 2, "updated": 0, "unchanged": 0, "duplicates": 0, "rejected": 1,
    }  # fmt: skip
    (record,) = _report(api, job)
    assert record["line"] == "3"
    assert "field larger than field limit" in record["message"]
    assert "lines 3-10503 rejected as one record" in record["message"]
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "a@example.com",
        "c@example.com",
    ]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b"x@example.com,Andr\xe9,B,,,", "Line 202 is not valid UTF-8"),
        (b"x@example.com," + b"y" * 3_000_000 + b",B,,,", "Line 202 is longer than 1048576"),
    ],
    ids=["invalid-utf8", "line-of-3-mb"],
)
def test_a_bad_file_fails_at_once_and_writes_nothing(worker, api, bad_line, message):
    # Deep enough into the file that the upload's sniffing (first 4 KB) does not see it.
    good = contacts_csv(200).rstrip(b"\n").split(b"\n")
    data = b"\n".join([*good, bad_line, *contacts_csv(50, start=10).split(b"\n")[1:]])

    job = _import(api, data)

    assert job.status == "failed"
    assert job.error["type"] == "CsvImportError"
    assert message in job.error["message"]
    assert "nothing was imported" in job.error["message"]
    assert Contact.objects.count() == 0


def test_missing_required_headers_fail_at_once_with_the_expected_list(worker, api):
    job = _import(api, b"name,mail\nAnn,ann@example.com\n")

    assert job.status == "failed"
    assert job.error["type"] == "CsvImportError"
    assert "Expected headers: email (required), first_name, last_name" in job.error["message"]
    assert "Found: 'name', 'mail'" in job.error["message"]
    assert Contact.objects.count() == 0


def test_a_column_map_names_headers_the_defaults_do_not_know(worker, api):
    data = b"Courriel;Prenom;Pays\nzoe@example.com;Zo\xc3\xab;fr\n"

    job = _import(
        api,
        data,
        delimiter=";",
        column_map={"courriel": "email", "prenom": "first_name", "PAYS": "country"},
    )

    assert job.status == "succeeded", job.error
    zoe = Contact.objects.get(email="zoe@example.com")
    assert (zoe.first_name, zoe.country) == ("Zoë", "FR")


def test_a_header_only_file_succeeds_with_nothing_counted(worker, api):
    job = _import(api, (HEADER + "\n").encode())

    assert job.status == "succeeded", job.error
    assert _counts(job) == dict.fromkeys(
        ("rows", "inserted", "updated", "unchanged", "duplicates", "rejected"), 0
    )
    assert job.result["error_report"] is None


def _batch_ends(batch_rows: int, rows: int) -> set[int]:
    ends, total = set(), 0
    for size in batch_sizes(batch_rows):
        total += size
        if total >= rows:
            return ends
        ends.add(total)
    raise AssertionError("unreachable")


def test_cancel_stops_at_a_batch_boundary_with_a_counted_state(worker, api):
    upload_id = upload(api, "big.csv", contacts_csv(400_000), "text/csv").json()["id"]
    job_id = _submit(api, upload_id)
    wait_for(
        lambda: Job.objects.filter(id=job_id, status="running", progress_current__gt=0).exists(),
        timeout=60,
        what="the import to write its first batch",
    )

    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202

    job = wait_for(
        lambda: Job.objects.filter(id=job_id, result__cancelled=True).first(),
        timeout=60,
        what="the cancelled import to record its counts",
    )
    assert job.status == "cancelled"
    written = Contact.objects.count()
    assert 0 < written < 400_000
    assert job.result["inserted"] == written  # everything committed is counted, and only that
    assert written in _batch_ends(settings.OFFLOAD_CSV_BATCH_ROWS, 400_000)  # whole batches
    assert job.result["rows"] == written  # the rows of the committed batches, no more


def test_one_import_per_owner_at_a_time(worker, api, other_api):
    mine = [
        upload(api, f"{n}.csv", contacts_csv(30_000, start=n * 100_000), "text/csv").json()["id"]
        for n in range(2)
    ]
    theirs = upload(other_api, "t.csv", contacts_csv(10, start=900_000), "text/csv").json()["id"]
    jobs = [_submit(api, upload_id) for upload_id in mine]
    other = _submit(other_api, theirs)

    assert Job.objects.get(id=jobs[1]).held  # waits queued, not in a worker

    finished = [_final(job_id) for job_id in [*jobs, other]]
    assert all(job.status == "succeeded" for job in finished), [j.error for j in finished]
    first, second, _ = finished
    assert first.finished_at <= second.started_at
    assert Contact.objects.count() == 60_010
    for job in finished:
        assert job.result["inserted"] == job.result["rows"]
