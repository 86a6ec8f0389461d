"""The report kinds and the daily report's default schedule.

`report` (queue `bulk`, one per owner at a time): params `type` (`job_stats`,
`contacts_export`), `format` (`csv`, `xlsx`, `pdf`; contacts_export: csv or xlsx), for
job_stats `start` and `end` (days, inclusive, at most OFFLOAD_REPORT_MAX_RANGE_DAYS apart)
and `all_users` (staff only), for contacts_export `filters` (`country`, `subscribed`,
`attributes`; staff only). Who may see what: reports/params.py. The result links the
stored file with an expiring signed URL (reports/links.py).

`report.daily` (staff only, scheduled): yesterday's job_stats of every job as a PDF,
emailed to staff (reports/daily.py).
"""

from datetime import date

from django.conf import settings
from rest_framework import serializers

from jobs.errors import BrokerUnavailable
from jobs.models import Job
from jobs.registry import RetryPolicy, job_kind
from jobs.runtime import JobRun
from jobs.schedules.defaults import schedule_default
from reports import daily, services
from reports.params import DAY_OUT_OF_RANGE, EARLIEST, LATEST, ReportParams


@job_kind(
    "report",
    params=ReportParams,
    queue="bulk",
    priority=3,
    concurrency_key="owner",
    concurrency_limit=1,
    soft_time_limit=3600,
    time_limit=3600 + 60,
)
def report(job: JobRun) -> dict:
    """Job statistics or a contacts export, as CSV, XLSX or PDF, linked for download."""
    owner_id = Job.objects.filter(id=job.id).values_list("owner_id", flat=True).first()
    made = services.report_make(
        params=job.params, owner_id=owner_id, job_id=job.id, progress=job.progress
    )
    return services.report_result(params=job.params, made=made)


class DailyReportParams(serializers.Serializer):
    date = serializers.DateField(
        required=False,
        help_text="The day to report (YYYY-MM-DD); default: yesterday in DJANGO_TIME_ZONE.",
    )

    def validate_date(self, value: date) -> date:
        if not EARLIEST <= value <= LATEST:
            raise serializers.ValidationError(DAY_OUT_OF_RANGE)
        return value


@job_kind(
    "report.daily",
    params=DailyReportParams,
    queue="bulk",
    priority=3,
    staff_only=True,
    # The email job could not be queued (broker unreachable): the run is tried again.
    retry=RetryPolicy(on=(BrokerUnavailable,), max_attempts=4, backoff=30.0),
    soft_time_limit=1800,
    time_limit=1800 + 60,
)
def report_daily(job: JobRun) -> dict:
    """Yesterday's job statistics as a PDF, emailed to staff."""
    day = date.fromisoformat(job.params["date"]) if job.params.get("date") else None
    return daily.daily_report_run(
        job_id=job.id, day=day or daily.report_day_default(), progress=job.progress
    )


schedule_default(
    "offload.daily_report",
    kind="report.daily",
    crontab={"minute": "15", "hour": "0", "timezone": settings.TIME_ZONE},
    expire_seconds=6 * 3600,
    description="Daily: yesterday's job statistics as a PDF, emailed to staff users.",
)
