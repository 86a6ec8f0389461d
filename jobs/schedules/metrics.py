"""Beat and schedule gauges, read from the database at scrape time: who leads (the
`BeatLease` row), until when, and each schedule's latest claimed slot (the beat's last tick
that sent, skipped or failed something for it)."""

from collections.abc import Iterable

from django.db.models import Max
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from jobs.metrics import counts_gauge
from jobs.models import BeatLease, ScheduleSlot, SlotOutcome
from jobs.schedules.leader import LEASE_NAME


def beat_gauges() -> Iterable[Metric]:
    lease = BeatLease.objects.filter(name=LEASE_NAME).first()
    leader = GaugeMetricFamily(
        "offload_beat_leader",
        "1 for the beat process holding an unexpired leader lease (label: its name).",
        labels=["holder"],
    )
    expires = GaugeMetricFamily(
        "offload_beat_lease_expires_timestamp_seconds",
        "When the leader lease runs out unless renewed (Unix time); absent before any beat ran.",
    )
    token = GaugeMetricFamily(
        "offload_beat_leader_token", "Fencing token of the lease: grows by one per new leader."
    )
    if lease is not None:
        leader.add_metric([lease.holder], 1 if lease.expires_at > timezone.now() else 0)
        expires.add_metric([], lease.expires_at.timestamp())
        token.add_metric([], lease.token)
    yield leader
    yield expires
    yield token

    last = GaugeMetricFamily(
        "offload_schedule_last_slot_timestamp_seconds",
        "Due time of each schedule's latest claimed slot (Unix time).",
        labels=["schedule"],
    )
    claimed = GaugeMetricFamily(
        "offload_schedule_last_claim_timestamp_seconds",
        "When each schedule's latest slot was claimed by a beat (Unix time).",
        labels=["schedule"],
    )
    rows = (
        ScheduleSlot.objects.values_list("schedule")
        .annotate(due=Max("due_at"), at=Max("claimed_at"))
        .order_by()
    )
    for schedule, due, at in rows:
        last.add_metric([schedule], due.timestamp())
        claimed.add_metric([schedule], at.timestamp())
    yield last
    yield claimed

    yield counts_gauge(
        "offload_schedule_slots",
        "Schedule slots kept, by outcome.",
        rows=ScheduleSlot.objects.all(),
        label="outcome",
        values=SlotOutcome.values,
    )
