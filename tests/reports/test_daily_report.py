"""The daily report: yesterday's statistics of every job as a PDF, emailed to staff through
an `email` job; its default schedule."""

import io
import json
from datetime import UTC, date, datetime

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask
from pypdf import PdfReader

from jobs.models import FilePurpose, Job, StoredFile
from reports import daily
from tests.reportdata import DAY

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_with_email(django_user_model):
    for name, email, active in (
        ("ops", "ops@example.com", True),
        ("lead", "lead@example.com", True),
        ("gone", "gone@example.com", False),
    ):
        django_user_model.objects.create_user(
            username=name, email=email, is_staff=True, is_active=active
        )
    django_user_model.objects.create_user(username="user", email="user@example.com")


def test_the_default_day_is_yesterday_in_the_time_zone(settings):
    settings.TIME_ZONE = "Pacific/Auckland"
    # 2026-03-10 20:00 UTC is already the 11th in Auckland.
    assert daily.report_day_default(datetime(2026, 3, 10, 20, tzinfo=UTC)) == date(2026, 3, 10)
    settings.TIME_ZONE = "UTC"
    assert daily.report_day_default(datetime(2026, 3, 10, 20, tzinfo=UTC)) == date(2026, 3, 9)


def test_staff_emails_are_active_staff_with_an_address(staff_with_email, staff_user):
    assert daily.staff_emails() == ["lead@example.com", "ops@example.com"]


def test_the_daily_report_is_a_pdf_of_every_users_jobs(jobs_of_a_day):
    job = Job.objects.create(kind="report.daily", params={"date": DAY.isoformat()})

    made = daily.daily_report_make(job_id=job.id, day=DAY, progress=lambda *a: None)

    assert made.stored.purpose == FilePurpose.REPORT
    assert made.stored.owner_id is None
    assert made.stored.content_type == "application/pdf"
    with default_storage.open(made.stored.storage_name, "rb") as stored:
        reader = PdfReader(io.BytesIO(stored.read()))
    words = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "Job statistics 2026-03-10 to 2026-03-10" in words
    assert "every user's jobs" in words
    jobs_on_day = Job.objects.filter(created_at__date=DAY).exclude(kind="report.daily").count()
    assert f"jobs {jobs_on_day}" in words
    assert "demo.sleep succeeded 1" in words  # another user's job is counted
    assert "cleanup succeeded 1" in words  # and a system job


def test_without_staff_addresses_nothing_is_emailed(jobs_of_a_day, staff_user):
    job = Job.objects.create(kind="report.daily")

    result = daily.daily_report_run(job_id=job.id, day=DAY, progress=lambda *a: None)

    assert result["emailed_to"] == []
    assert result["email_job"] is None
    assert "no active staff user has an email address" in result["note"]
    assert StoredFile.objects.filter(id=result["file"], job_id=job.id).exists()
    assert not Job.objects.filter(kind=daily.EMAIL_KIND).exists()


def test_the_email_params(jobs_of_a_day):
    job = Job.objects.create(kind="report.daily")
    made = daily.daily_report_make(job_id=job.id, day=DAY, progress=lambda *a: None)

    params = daily.daily_report_email_params(
        day=DAY, to=["ops@example.com"], made=made, report_job_id=job.id
    )

    assert params == {
        "template": "daily_report",
        "to": ["ops@example.com"],
        "context": {"date": "2026-03-10", "totals": made.summary["totals"],
                    "report_job": str(job.id)},
        "attachments": [str(made.stored.id)],
    }  # fmt: skip
    assert json.loads(json.dumps(params)) == params  # JSON as it is, for job params


def test_the_email_job_is_submitted_once_per_run(jobs_of_a_day, staff_with_email):
    job = Job.objects.create(kind="report.daily")

    first = daily.daily_report_run(job_id=job.id, day=DAY, progress=lambda *a: None)
    again = daily.daily_report_run(job_id=job.id, day=DAY, progress=lambda *a: None)

    emails = Job.objects.filter(kind=daily.EMAIL_KIND)
    assert emails.count() == 1  # a redelivered run finds the email it already sent
    email = emails.get()
    assert str(email.id) == first["email_job"] == again["email_job"]
    assert email.owner_id is None
    assert email.params["template"] == "daily_report"
    assert email.params["to"] == ["lead@example.com", "ops@example.com"]
    assert email.params["context"]["date"] == "2026-03-10"
    assert email.params["attachments"] == [first["file"]]


def test_the_schedule_default_is_written_by_setup_periodic_tasks():
    out = io.StringIO()
    call_command("setup_periodic_tasks", stdout=out)

    assert "offload.daily_report: created" in out.getvalue()
    task = PeriodicTask.objects.get(name="offload.daily_report")
    assert task.task == "jobs.kind.report.daily"
    assert json.loads(task.kwargs) == {}
    assert (task.crontab.minute, task.crontab.hour) == ("15", "0")
    assert task.expire_seconds == 6 * 3600


def test_old_report_files_are_deleted_by_the_cleanup_kind(settings, jobs_of_a_day):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.kinds.cleanup import cleanup_run

    settings.OFFLOAD_RETENTION_FILES_DAYS = 30
    old = daily.daily_report_make(
        job_id=Job.objects.create(kind="report.daily").id, day=DAY, progress=lambda *a: None
    )
    young = daily.daily_report_make(
        job_id=Job.objects.create(kind="report.daily").id, day=DAY, progress=lambda *a: None
    )
    StoredFile.objects.filter(id=old.stored.id).update(
        updated_at=timezone.now() - timedelta(days=31)
    )

    result = cleanup_run(categories=["job_files"])

    assert result["categories"]["job_files"]["deleted"] == 1
    assert list(StoredFile.objects.values_list("id", flat=True)) == [young.stored.id]
    assert not default_storage.exists(old.stored.storage_name)
    assert default_storage.exists(young.stored.storage_name)
