"""The report kinds end to end: submitted through the API, run by a real worker on
RabbitMQ and PostgreSQL, downloaded through the signed link in the result, in every
format."""

import csv
import io

import openpyxl
import pytest
from pypdf import PdfReader

from jobs.models import Job
from notifications.models import Contact
from tests.reportdata import DAY, contacts, jobs_of_a_day  # noqa: F401  (fixtures)
from tests.smtp import SmtpServer
from tests.support import Worker, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STATS = {"type": "job_stats", "start": DAY.isoformat(), "end": DAY.isoformat()}


def _run(client, kind: str, params: dict) -> Job:
    response = client.post("/api/v1/jobs", {"kind": kind, "params": params}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]

    def done():
        job = Job.objects.get(id=job_id)
        return job if job.is_finished else None

    job = wait_for(done, timeout=120, what=f"{kind} job {job_id} to finish")
    assert job.status == "succeeded", job.error
    return job


def _download(client, job: Job) -> bytes:
    response = client.get(job.result["url"])
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


@pytest.mark.usefixtures("jobs_of_a_day")
def test_job_stats_in_every_format(worker, api, other_api, user):
    own = Job.objects.filter(owner=user, created_at__date=DAY)
    counts = {(j.kind, j.status): 0 for j in own}
    for job in own:
        counts[(job.kind, job.status)] += 1

    for fmt in ("csv", "xlsx", "pdf"):
        job = _run(api, "report", {**STATS, "format": fmt})
        data = _download(api, job)

        assert job.result["format"] == fmt
        assert job.result["bytes"] == len(data)
        assert job.result["totals"]["jobs"] == sum(counts.values())
        assert job.progress_percent == 100.0
        assert other_api.get(job.result["url"]).status_code == 403
        if fmt == "csv":
            text = data.decode()
            body = text.split("# counts\r\n")[1].split("\r\n\r\n")[0]
            rows = list(csv.reader(io.StringIO(body)))[1:]
            assert {(k, s): int(n) for k, s, n in rows} == counts
        elif fmt == "xlsx":
            sheet = openpyxl.load_workbook(io.BytesIO(data))["counts"]
            rows = sheet.iter_rows(min_row=2, values_only=True)
            assert {(k, s): n for k, s, n in rows} == counts
        else:
            reader = PdfReader(io.BytesIO(data))
            words = " ".join(" ".join(p.extract_text() for p in reader.pages).split())
            for (kind, status), n in counts.items():
                assert f"{kind} {status} {n}" in words
            assert len(reader.pages[0].images) == 1


@pytest.mark.usefixtures("contacts")
def test_contacts_export_in_csv_and_xlsx(worker, staff_api, api):
    filters = {"country": ["GB"], "attributes": {"plan": "gold"}}
    want = sorted(
        Contact.objects.filter(country="GB", attributes__contains={"plan": "gold"})
        .values_list("email", flat=True)
    )  # fmt: skip

    job = _run(staff_api, "report", {"type": "contacts_export", "format": "csv",
                                     "filters": filters})  # fmt: skip
    rows = list(csv.reader(io.StringIO(_download(staff_api, job).decode())))
    assert [r[0] for r in rows[1:]] == want
    assert job.result["rows"] == len(want)
    assert (job.progress_current, job.progress_total) == (len(want), len(want))
    assert "'=HYPERLINK" in rows[1][1]
    assert api.get(job.result["url"]).status_code == 403  # a user is not the owner

    job = _run(staff_api, "report", {"type": "contacts_export", "format": "xlsx",
                                     "filters": filters})  # fmt: skip
    sheet = openpyxl.load_workbook(io.BytesIO(_download(staff_api, job)))["contacts"]
    assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == want
    assert sheet["B2"].data_type == "s"


@pytest.mark.usefixtures("jobs_of_a_day")
def test_the_daily_report_runs_on_the_worker(worker, staff_api):
    job = _run(staff_api, "report.daily", {"date": DAY.isoformat()})

    assert job.result["format"] == "pdf"
    assert job.result["all_users"] is True
    assert job.result["emailed_to"] == []  # no staff user has an address here
    data = _download(staff_api, job)
    assert data.startswith(b"%PDF-")
    assert "every user's jobs" in " ".join(
        PdfReader(io.BytesIO(data)).pages[0].extract_text().split()
    )


@pytest.mark.usefixtures("jobs_of_a_day", "worker_paused")
def test_the_daily_report_emails_staff_through_the_worker(staff_api, django_user_model, log_dir):
    """The PDF reaches a real SMTP server (aiosmtpd) as an attachment of the email job the
    report submits, run by a worker whose email backend is that server."""
    django_user_model.objects.create_user(username="ops", email="ops@example.com", is_staff=True)
    smtp = SmtpServer().start()
    mailer = Worker(
        log_dir=log_dir, env=process_env(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port))
    ).start()
    try:
        job = _run(staff_api, "report.daily", {"date": DAY.isoformat()})
        assert job.result["emailed_to"] == ["ops@example.com"]
        email = Job.objects.get(id=job.result["email_job"])
        assert email.kind == "email"
        assert email.params["template"] == "daily_report"
        assert email.params["attachments"] == [job.result["file"]]
        received = wait_for(lambda: smtp.messages("ops@example.com"), timeout=60, what="the mail")
    finally:
        mailer.stop()
        smtp.stop()

    assert len(received) == 1
    message = received[0].parsed()
    assert DAY.isoformat() in message["Subject"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == _download(staff_api, job)
    wait_for(
        lambda: Job.objects.filter(id=email.id, status="succeeded").exists(),
        timeout=30,
        what="the email job to succeed",
    )
