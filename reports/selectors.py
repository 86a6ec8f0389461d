"""Reads behind the reports: job statistics for a date range and the contacts to export.

Days are calendar days in DJANGO_TIME_ZONE; a range covers its first day's midnight up to
(not including) the midnight after its last day. What falls in the range:
- counts per kind and status: jobs *created* in the range (whatever their status now);
- durations, errors and throughput: jobs that *finished* in the range.
A duration is `finished_at - started_at` of a job that succeeded, failed or died (its
first start to its final end, retries included). Percentiles interpolate linearly between
the two nearest values (PostgreSQL's percentile_cont).
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Func, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncHour

from jobs.models import Job, JobStatus
from notifications.models import Contact

PERCENTILES = (0.5, 0.95, 0.99)
TOP_ERRORS = 10
ERROR_MESSAGE_MAX = 300
DURATION_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD)
FINISHED_STATUSES = (*DURATION_STATUSES, JobStatus.CANCELLED)


@dataclass
class JobStats:
    start: date
    end: date
    all_users: bool
    counts: list[dict[str, Any]] = field(default_factory=list)
    durations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {"jobs": 0}
        for row in self.counts:
            totals["jobs"] += row["count"]
            totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
        return totals

    def hours(self) -> list[tuple[datetime, int, int]]:
        """Every hour of the range: (hour, jobs finished, jobs succeeded), zeros included."""
        tz = ZoneInfo(settings.TIME_ZONE)
        lo, hi = day_bounds(self.start, self.end)
        seen = {
            row["hour"].astimezone(tz): (row["finished"], row["succeeded"])
            for row in self.throughput
        }
        hours, at = [], lo
        while at < hi:
            hours.append((at, *seen.get(at, (0, 0))))
            # Hour by hour in UTC, so a DST change neither repeats nor drops an hour.
            at = (at.astimezone(ZoneInfo("UTC")) + timedelta(hours=1)).astimezone(tz)
        return hours


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    tz = ZoneInfo(settings.TIME_ZONE)
    return (
        datetime.combine(start, time.min, tzinfo=tz),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz),
    )


def _jobs(owner_id: int | None) -> QuerySet[Job]:
    jobs = Job.objects.order_by()
    return jobs if owner_id is None else jobs.filter(owner_id=owner_id)


def job_stats(*, start: date, end: date, owner_id: int | None) -> JobStats:
    """Statistics of the jobs of `owner_id` (None: every job) in [start, end]."""
    lo, hi = day_bounds(start, end)
    jobs = _jobs(owner_id)
    created = jobs.filter(created_at__gte=lo, created_at__lt=hi)
    finished = jobs.filter(finished_at__gte=lo, finished_at__lt=hi)
    stats = JobStats(start=start, end=end, all_users=owner_id is None)
    stats.counts = list(
        created.values("kind", "status").annotate(count=Count("id")).order_by("kind", "status")
    )
    if connection.vendor == "postgresql":
        stats.durations = _durations_postgresql(lo, hi, owner_id)
    else:
        stats.durations = durations_portable(finished)
    stats.errors = [
        {**row, "message": (row["message"] or "")[:ERROR_MESSAGE_MAX]}
        for row in finished.filter(error__isnull=False)
        .annotate(
            type=KeyTextTransform("type", "error"),
            message=KeyTextTransform("message", "error"),
        )
        .values("kind", "type", "message")
        .annotate(count=Count("id"))
        .order_by("-count", "kind", "type", "message")[:TOP_ERRORS]
    ]
    stats.throughput = list(
        finished.filter(status__in=FINISHED_STATUSES)
        .annotate(hour=TruncHour("finished_at", tzinfo=ZoneInfo(settings.TIME_ZONE)))
        .values("hour")
        .annotate(
            finished=Count("id"),
            succeeded=Count("id", filter=Q(status=JobStatus.SUCCEEDED)),
        )
        .order_by("hour")
    )
    return stats


def _durations_postgresql(lo: datetime, hi: datetime, owner_id: int | None) -> list[dict]:
    owner_sql = "" if owner_id is None else "AND owner_id = %s"
    sql = f"""
        SELECT kind, count(*), avg(d), min(d), max(d),
               percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY d)
        FROM (
            SELECT kind, EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS d
            FROM {Job._meta.db_table}
            WHERE finished_at >= %s AND finished_at < %s AND started_at IS NOT NULL
              AND status = ANY(%s) {owner_sql}
        ) AS runs
        GROUP BY kind ORDER BY kind
    """  # noqa: S608  (table name from the model, values as parameters)
    args: list[Any] = [list(PERCENTILES), lo, hi, list(DURATION_STATUSES)]
    if owner_id is not None:
        args.append(owner_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    return [
        {
            "kind": kind,
            "count": count,
            "mean": mean,
            "min": low,
            "max": high,
            **{_name(p): value for p, value in zip(PERCENTILES, values, strict=True)},
        }
        for kind, count, mean, low, high, values in rows
    ]


def _name(p: float) -> str:
    return f"p{round(p * 100)}"


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between the two nearest ranks (percentile_cont)."""
    position = p * (len(ordered) - 1)
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def durations_portable(finished: QuerySet[Job]) -> list[dict]:
    """The durations table for databases without percentile_cont (SQLite): one kind's
    durations in memory at a time."""
    runs = (
        finished.filter(started_at__isnull=False, status__in=DURATION_STATUSES)
        .values_list("kind", "started_at", "finished_at")
        .order_by("kind")
    )
    table, kind, values = [], None, []

    def close() -> None:
        if values:
            values.sort()
            table.append(
                {
                    "kind": kind,
                    "count": len(values),
                    "mean": sum(values) / len(values),
                    "min": values[0],
                    "max": values[-1],
                    **{_name(p): percentile(values, p) for p in PERCENTILES},
                }
            )

    for row_kind, started, ended in runs.iterator(chunk_size=settings.OFFLOAD_REPORT_CHUNK_ROWS):
        if row_kind != kind:
            close()
            kind, values = row_kind, []
        values.append((ended - started).total_seconds())
    close()
    return table


CONTACT_COLUMNS = (
    ("email", "text"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("phone", "text"),
    ("country", "text"),
    ("subscribed", "bool"),
    ("unsubscribed_at", "datetime"),
    ("created_at", "datetime"),
    ("updated_at", "datetime"),
    ("attributes", "text"),
)


def contacts_filtered(filters: dict[str, Any]) -> QuerySet[Contact]:
    contacts = Contact.objects.all()
    if filters.get("country"):
        contacts = contacts.filter(country__in=filters["country"])
    if filters.get("subscribed") is True:
        contacts = contacts.filter(unsubscribed_at__isnull=True)
    elif filters.get("subscribed") is False:
        contacts = contacts.filter(unsubscribed_at__isnull=False)
    if filters.get("attributes"):
        contacts = contacts.filter(attributes__contains=filters["attributes"])
    return contacts


_CSV_TEXT = (
    "CASE WHEN left(%(expressions)s, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
    "THEN '''' || %(expressions)s ELSE NULLIF(%(expressions)s, '') END"
)
_CSV_MOMENT = "to_char(%(expressions)s, 'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM')"
_CSV_SUBSCRIBED = "CASE WHEN %(expressions)s IS NULL THEN 'true' ELSE 'false' END"


def contacts_csv_select(contacts: QuerySet[Contact]) -> tuple[str, tuple]:
    """PostgreSQL: the export's SELECT with every cell already formatted as the Python
    CSV writer formats it (reports/writers.py): text escaped against formulas, empty text
    as NULL (so COPY leaves it unquoted), booleans as true/false, times in ISO 8601 with
    microseconds and offset (in the session's time zone, which the caller sets). Returns
    (sql, params) for `COPY (sql) TO STDOUT`."""
    cells = {}
    for name, kind in CONTACT_COLUMNS:
        if name == "subscribed":
            cell = Func(F("unsubscribed_at"), template=_CSV_SUBSCRIBED, output_field=TextField())
        elif name == "attributes":
            cell = Cast("attributes", TextField())
        elif kind == "datetime":
            cell = Func(F(name), template=_CSV_MOMENT, output_field=TextField())
        else:
            cell = Func(F(name), template=_CSV_TEXT, output_field=TextField())
        cells[f"csv_{name}"] = cell
    query = contacts.order_by("email").annotate(**cells).values_list(*cells).query
    return query.sql_with_params()


def contacts_rows(contacts: QuerySet[Contact]) -> Iterator[tuple]:
    """The export's rows in email order, streamed: on PostgreSQL through a server-side
    cursor, OFFLOAD_REPORT_CHUNK_ROWS at a time. `attributes` is the database's own JSON
    text (no decode and re-encode per row)."""
    rows = (
        contacts.order_by("email")
        .annotate(attributes_text=Cast("attributes", TextField()))
        .values_list(
            "email",
            "first_name",
            "last_name",
            "phone",
            "country",
            "unsubscribed_at",
            "created_at",
            "updated_at",
            "attributes_text",
        )
    )
    for email, first, last, phone, country, unsub, created, updated, attributes in rows.iterator(
        chunk_size=settings.OFFLOAD_REPORT_CHUNK_ROWS
    ):
        yield (
            email, first, last, phone, country, unsub is None, unsub, created, updated, attributes,
        )  # fmt: skip
