"""Webhook metrics: every attempt counted by outcome where it finishes (a worker child, in
prometheus-client's multiprocess mode, see jobs/metrics.py), and the deliveries kept, by
status, read from the database at scrape time."""

from collections.abc import Iterable

from prometheus_client.core import Metric

from jobs import metrics as job_metrics
from jobs.metrics import Counter

WEBHOOK_ATTEMPTS = Counter(
    "offload_webhook_attempts",
    "Webhook delivery attempts, by what came of them (succeeded, retrying, failed).",
    ["outcome"],
)


def attempt_count(*, outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def deliveries_gauges() -> Iterable[Metric]:
    from notifications.models import Delivery, DeliveryStatus

    yield job_metrics.counts_gauge(
        "offload_webhook_deliveries",
        "Webhook deliveries kept, by status.",
        rows=Delivery.objects.all(),
        label="status",
        values=DeliveryStatus.values,
    )


def metrics_install() -> None:
    job_metrics.collector_register(deliveries_gauges)
