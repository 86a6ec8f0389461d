"""The sending rate limit shared by every worker: OFFLOAD_EMAIL_RATE_LIMIT messages per
second, whatever the number of workers and machines.

One row (`SendRate`) holds the earliest time the next message may go out. A sender
reserves its slot with one atomic statement (slot = max(next_at, now); next_at = slot +
1/rate) and sleeps until the slot. The clock is the database's, so workers on machines with
skewed clocks still agree, and no broker or cache beyond PostgreSQL is needed. Messages
are spaced evenly (no burst): over any stretch of time at most rate x seconds + 1 go out.
"""

import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import SendRate

BUCKET = "email"

_RESERVE_SQL = """
INSERT INTO notifications_sendrate (name, next_at)
VALUES (%(name)s, clock_timestamp() + %(step)s * interval '1 second')
ON CONFLICT (name) DO UPDATE
SET next_at = GREATEST(notifications_sendrate.next_at, clock_timestamp())
    + %(step)s * interval '1 second'
RETURNING EXTRACT(EPOCH FROM (next_at - %(step)s * interval '1 second' - clock_timestamp()))
"""


def _reserve_postgres(step: float) -> float:
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE_SQL, {"name": BUCKET, "step": step})
        return float(cursor.fetchone()[0])


def _reserve_portable(step: float) -> float:
    # SQLite (the quickstart): its write transaction serialises senders instead of a row lock.
    with transaction.atomic():
        now = timezone.now()
        row, _ = SendRate.objects.select_for_update().get_or_create(
            name=BUCKET, defaults={"next_at": now}
        )
        slot = max(row.next_at, now)
        row.next_at = slot + timedelta(seconds=step)
        row.save(update_fields=["next_at"])
    return (slot - now).total_seconds()


def send_slot_wait(rate: float | None = None) -> float:
    """Block until this process may send one message; returns the seconds waited."""
    rate = settings.OFFLOAD_EMAIL_RATE_LIMIT if rate is None else rate
    if rate <= 0:
        return 0.0
    step = 1.0 / rate
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        wait = _reserve_postgres(step)
    else:
        wait = _reserve_portable(step)
    if wait > 0:
        time.sleep(wait)
    return max(wait, 0.0)
