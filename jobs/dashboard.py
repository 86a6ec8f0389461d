"""Reads behind the operator's dashboard in the admin (`/admin/dashboard/`): job counts by
kind and status, queue depths from the broker, the workers that answer a ping, and finished
jobs over time. Each read is bounded: a broker that does not answer or workers that stay
silent give an empty answer with a reason, never a hanging page."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kombu
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.services import BROKER_ERRORS

STATUSES = list(JobStatus.values)
FAILED = ("failed", "dead")


@dataclass
class Counts:
    """Jobs created since `since`, by kind and status."""

    since: datetime
    by_kind: dict[str, dict[str, int]]
    totals: dict[str, int]


@dataclass
class Queues:
    depths: dict[str, dict[str, int]] = field(default_factory=dict)  # ready, consumers
    error: str = ""


@dataclass
class Workers:
    names: list[str] = field(default_factory=list)
    queues: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""


def dashboard_counts(*, since: datetime) -> Counts:
    rows = (
        Job.objects.filter(created_at__gte=since)
        .values_list("kind", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_kind: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(STATUSES, 0)
    for kind, status, count in rows:
        by_kind.setdefault(kind, dict.fromkeys(STATUSES, 0))[status] = count
        totals[status] = totals.get(status, 0) + count
    return Counts(since=since, by_kind=dict(sorted(by_kind.items())), totals=totals)


def dashboard_throughput(*, now: datetime, hours: int = 24) -> list[dict[str, Any]]:
    """Finished jobs per hour over the last `hours` hours, oldest first; every hour is
    listed, empty ones with zeros."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    rows = (
        Job.objects.filter(finished_at__gte=start, finished_at__lt=end)
        .annotate(hour=TruncHour("finished_at"))
        .values_list("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    buckets = {
        start + timedelta(hours=i): {"succeeded": 0, "failed": 0, "cancelled": 0}
        for i in range(hours)
    }
    for hour, status, count in rows:
        bucket = buckets.get(hour)
        if bucket is None:
            continue
        key = "failed" if status in FAILED else status
        if key in bucket:
            bucket[key] += count
    return [{"hour": hour, **bucket} for hour, bucket in buckets.items()]


def _connection(broker_url: str | None = None) -> kombu.Connection:
    return kombu.Connection(
        broker_url or settings.CELERY_BROKER_URL,
        connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    )


def dashboard_queues(*, broker_url: str | None = None) -> Queues:
    """Messages ready and consumers of each Offload queue, read with a passive declare."""
    result = Queues()
    try:
        with _connection(broker_url) as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            for queue in settings.CELERY_TASK_QUEUES:
                _, ready, consumers = channel.queue_declare(queue.name, passive=True)
                result.depths[queue.name] = {"ready": ready, "consumers": consumers}
    except BROKER_ERRORS as exc:
        result.error = f"the broker did not answer: {exc}"
    return result


def dashboard_workers(
    *, timeout: float = 1.0, broker_url: str | None = None, destination: list[str] | None = None
) -> Workers:
    """The workers that answer a ping within `timeout` seconds, with the queues they
    consume. Silent workers are simply absent; an unreachable broker is an error."""
    from config.celery_app import app

    result = Workers()
    try:
        with _connection(broker_url) as conn:
            conn.ensure_connection(max_retries=1)
            inspect = app.control.inspect(timeout=timeout, connection=conn, destination=destination)
            replies = inspect.ping() or {}
            queues = (inspect.active_queues() or {}) if replies else {}
    except BROKER_ERRORS as exc:
        result.error = f"the broker did not answer: {exc}"
        return result
    result.names = sorted(replies)
    result.queues = {
        name: sorted(q["name"] for q in queues.get(name) or []) for name in result.names
    }
    return result


def dashboard_data(*, now: datetime | None = None, workers_timeout: float = 1.0) -> dict:
    now = now or timezone.now()
    return {
        "now": now,
        "windows": [
            ("hour", "Last hour", dashboard_counts(since=now - timedelta(hours=1))),
            ("day", "Last 24 hours", dashboard_counts(since=now - timedelta(days=1))),
        ],
        "statuses": STATUSES,
        "queues": dashboard_queues(),
        "workers": dashboard_workers(timeout=workers_timeout),
        "throughput": dashboard_throughput(now=now),
        "dead": Job.objects.filter(status="dead").count(),
    }
