"""`webhook.deliver`: one attempt to send one webhook delivery (see notifications/services.py).

Not idempotent in the late-ack sense (acknowledged on receipt): the delivery row is
claimed before sending, so a duplicate attempt job sends nothing, and an attempt whose
worker died is released again by the periodic sweep.
"""

from django.db.models import Q
from rest_framework import serializers

from jobs.registry import job_kind
from jobs.retention import retention_register
from jobs.runtime import JobRun
from notifications import services
from notifications.models import Delivery, DeliveryStatus


class DeliverParams(serializers.Serializer):
    delivery_id = serializers.UUIDField()


@job_kind(
    services.DELIVER_KIND,
    params=DeliverParams,
    queue="notifications",
    priority=5,
    staff_only=True,
    idempotent=False,
    soft_time_limit=60,
    time_limit=90,
)
def webhook_deliver(job: JobRun) -> dict:
    """Send one signed webhook delivery and record the attempt."""
    # On PostgreSQL the job's claim read claimed the delivery (see delivery_claim_with_job).
    claim = job.claimed.get("delivery", services.UNCLAIMED)
    return services.delivery_send(delivery_id=job.params["delivery_id"], claim=claim)


services.delivery_claim_with_job()


# Finished deliveries (their request and response log) go after their retention; a delivery
# still pending or retrying is never deleted.
retention_register(
    "webhooks.deliveries",
    model=Delivery,
    age_field="created_at",
    days_setting="OFFLOAD_RETENTION_WEBHOOK_DELIVERIES_DAYS",
    default_days=30,
    filter=Q(status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]),
)
