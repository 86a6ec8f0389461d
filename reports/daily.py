"""The daily report: the previous day's `job_stats` (every user's jobs) as a PDF, emailed
to staff (active staff users with an email address) as an attachment.

It runs as the `report.daily` kind from the `offload.daily_report` schedule (see
reports/kinds.py). The PDF is stored like any report (owner empty, so staff download it);
the email is a job of the `email` kind, submitted through the service layer. A redelivered
run makes the same file again and finds the email job it already submitted, so staff get
one email per run.
"""

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import Job
from jobs.services import JobSpec, job_submit
from reports import services

EMAIL_KIND = "email"
EMAIL_TEMPLATE = "daily_report"


def report_day_default(now: datetime | None = None) -> date:
    """Yesterday, in DJANGO_TIME_ZONE."""
    return timezone.localdate(now) - timedelta(days=1)


def staff_emails() -> list[str]:
    users = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
    return sorted({email.strip() for email in users.values_list("email", flat=True)})


def daily_report_params(day: date) -> dict[str, Any]:
    """The report the daily run makes: one day's statistics of every job, as a PDF."""
    return {
        "type": "job_stats",
        "format": "pdf",
        "start": day.isoformat(),
        "end": day.isoformat(),
        "all_users": True,
    }


def daily_report_make(
    *, job_id: uuid.UUID, day: date, progress: services.Progress
) -> services.Made:
    return services.report_make(
        params=daily_report_params(day), owner_id=None, job_id=job_id, progress=progress
    )


def daily_report_email_params(
    *, day: date, to: list[str], made: services.Made, report_job_id: uuid.UUID
) -> dict[str, Any]:
    return {
        "template": EMAIL_TEMPLATE,
        "to": to,
        "context": {
            "date": day.isoformat(),
            "totals": made.summary["totals"],
            "report_job": str(report_job_id),
        },
        "attachments": [str(made.stored.id)],
    }


def daily_report_email_submit(*, params: dict[str, Any]) -> Job:
    """The one call into the email kind: a system job (no owner)."""
    job, _ = job_submit(spec=JobSpec(kind=EMAIL_KIND, params=params), owner=None)
    return job


def _email_already_submitted(report_job_id: uuid.UUID) -> Job | None:
    return (
        Job.objects.filter(
            kind=EMAIL_KIND, owner=None, params__context__report_job=str(report_job_id)
        )
        .order_by("created_at")
        .first()
    )


def daily_report_run(
    *, job_id: uuid.UUID, day: date, progress: services.Progress
) -> dict[str, Any]:
    made = daily_report_make(job_id=job_id, day=day, progress=progress)
    result = services.report_result(params=daily_report_params(day), made=made)
    to = staff_emails()
    result["emailed_to"] = to
    if not to:
        result["email_job"] = None
        result["note"] = "no active staff user has an email address; nothing was emailed"
        return result
    email = _email_already_submitted(job_id) or daily_report_email_submit(
        params=daily_report_email_params(day=day, to=to, made=made, report_job_id=job_id)
    )
    result["email_job"] = str(email.id)
    return result
