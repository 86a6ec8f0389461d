"""Prometheus metrics, correct across processes.

Two sources:
- Counters and histograms are recorded in the process where the thing happens (a submit in a
  web process, a finish in a worker child) through prometheus-client's multiprocess mode:
  every process writes to files in OFFLOAD_METRICS_DIR, and a scrape sums them. Every web and
  worker process of one host must share that folder; it should be emptied when the host's
  processes start (the quickstart does). Workers on another host serve their own folder with
  `manage.py metrics_serve`.
- Gauges (jobs waiting or running per queue, dead jobs, messages in each broker queue) are
  read from the database and the broker at scrape time, so they are the same whichever
  process answers. Other apps add theirs with `collector_register`.

Terminal moves and retries are counted by an events listener: every lifecycle move already
publishes exactly one event after commit, so no counting code sits in the lifecycle.
"""

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

# prometheus-client picks its multiprocess mode when it is first imported; the setting wins
# over a folder inherited from a parent process's environment.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.OFFLOAD_METRICS_DIR)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402

if TYPE_CHECKING:
    from jobs.models import Job

CONTENT_TYPE = CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

JOBS_SUBMITTED = Counter(
    "offload_jobs_submitted", "Jobs accepted (answered 202 or created by a schedule).", ["kind"]
)
JOBS_FINISHED = Counter(
    "offload_jobs_finished", "Jobs that reached a final status.", ["kind", "status"]
)
JOB_RETRIES = Counter("offload_job_retries", "Attempts that ended in a retry.", ["kind"])
JOB_DURATION = Histogram(
    "offload_job_duration_seconds", "Run time of one attempt.", ["kind", "status"], buckets=BUCKETS
)
JOB_QUEUE_WAIT = Histogram(
    "offload_job_queue_wait_seconds",
    "Time from submit to the start of the first attempt.",
    ["kind"],
    buckets=BUCKETS,
)

_FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
_collectors: list[Callable[[], Iterable[Metric]]] = []


def jobs_submitted(jobs: Sequence["Job"]) -> None:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.kind] = counts.get(job.kind, 0) + 1
    for kind, count in counts.items():
        JOBS_SUBMITTED.labels(kind).inc(count)


def event_count(event: dict[str, Any]) -> None:
    """Events listener: one event per lifecycle move, so each final move counts once."""
    status = event["status"]
    if status in _FINAL:
        JOBS_FINISHED.labels(event["kind"], status).inc()
    elif status == "retrying":
        JOB_RETRIES.labels(event["kind"]).inc()


def run_observe(*, kind: str, status: str, started: datetime, finished: datetime) -> None:
    JOB_DURATION.labels(kind, status).observe(max((finished - started).total_seconds(), 0.0))


def queue_wait_observe(*, kind: str, created: datetime | str, started: datetime) -> None:
    """`created` as a raw query returned it: SQLite gives naive UTC datetimes or text."""
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    JOB_QUEUE_WAIT.labels(kind).observe(max((started - created).total_seconds(), 0.0))


def collector_register(collect: Callable[[], Iterable[Metric]]) -> None:
    """Add a scrape-time collector: a function yielding metric families."""
    _collectors.append(collect)


def counts_gauge(
    name: str, documentation: str, *, rows: Any, label: str, values: Iterable[str] = ()
) -> GaugeMetricFamily:
    """A gauge of row counts by one column: `rows` is a queryset, counted per `label` value
    in one query; each of `values` is reported, as 0 when no row has it."""
    from django.db.models import Count

    family = GaugeMetricFamily(name, documentation, labels=[label])
    counts = dict(rows.values_list(label).annotate(n=Count("id")).order_by())
    for value in dict.fromkeys([*values, *counts]):
        family.add_metric([value], counts.get(value, 0))
    return family


def _jobs_gauges() -> Iterable[Metric]:
    from django.db.models import Count

    from jobs.models import Job

    waiting = GaugeMetricFamily(
        "offload_jobs", "Jobs not yet finished, by status and queue.", labels=["status", "queue"]
    )
    rows = (
        Job.objects.filter(status__in=["scheduled", "queued", "running", "retrying"])
        .values_list("status", "queue")
        .annotate(n=Count("id"))
        .order_by()
    )
    for status, queue, count in rows:
        waiting.add_metric([status, queue], count)
    yield waiting
    yield counts_gauge(
        "offload_jobs_dead",
        "Dead jobs kept, by kind.",
        rows=Job.objects.filter(status="dead"),
        label="kind",
    )


def _broker_gauges() -> Iterable[Metric]:
    import kombu

    from jobs.services import BROKER_ERRORS

    messages = GaugeMetricFamily(
        "offload_queue_messages", "Messages ready in each broker queue.", labels=["queue"]
    )
    consumers = GaugeMetricFamily(
        "offload_queue_consumers", "Consumers of each broker queue.", labels=["queue"]
    )
    up = 1
    try:
        with kombu.Connection(
            settings.CELERY_BROKER_URL,
            connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        ) as conn:
            channel = conn.channel()
            for queue in settings.CELERY_TASK_QUEUES:
                _, ready, consuming = channel.queue_declare(queue.name, passive=True)
                messages.add_metric([queue.name], ready)
                consumers.add_metric([queue.name], consuming)
    except BROKER_ERRORS as exc:
        logger.warning("metrics: broker queues not read: %s", exc)
        up = 0
    yield messages
    yield consumers
    yield GaugeMetricFamily("offload_broker_up", "1 when the broker answered this scrape.", up)


class _ScrapeCollector:
    def collect(self) -> Iterable[Metric]:
        yield from _jobs_gauges()
        yield from _broker_gauges()
        for collect in _collectors:
            yield from collect()


def metrics_render() -> bytes:
    """The Prometheus text of every process of this host plus the scrape-time gauges."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_ScrapeCollector())
    return generate_latest(registry)


def metrics_render_local() -> bytes:
    """What this host's processes recorded, without database or broker reads (for
    `manage.py metrics_serve` on worker hosts)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def metrics_dir_empty() -> None:
    """Forget what earlier processes of this host recorded; call before any process of the
    host starts recording (files of live processes must not be removed)."""
    folder = settings.OFFLOAD_METRICS_DIR
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)


def metrics_install() -> None:
    from jobs import events
    from jobs.schedules.metrics import beat_gauges

    events.listener_add(event_count)
    collector_register(beat_gauges)
