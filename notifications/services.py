"""Webhooks: endpoints and their secrets, and deliveries from queueing to the last attempt.

A terminal job event (succeeded, failed, dead, cancelled) of a user's job queues one
delivery to the job's `callback_url` and one to each of the user's enabled endpoints that
subscribe to the event type (`job.<status>`; an endpoint with no event types gets all).
Each attempt is a job of kind `webhook.deliver` on the `notifications` queue. A failed
attempt is retried after the next step of `OFFLOAD_WEBHOOK_RETRY_SCHEDULE` (with +-20 %
jitter): a short wait is a Celery countdown, a long one waits in the database and is
released by the leading beat (a releaser, see jobs/delayed.py), so no message sits
unacknowledged in a worker for hours. 2xx is success; anything else (3xx included,
redirects are never followed), a timeout or a connection error is a failed attempt; 410
disables the endpoint. Delivery is at least once: receivers dedupe on `webhook-id`.
"""

import json
import logging
import random
import time
import uuid
from datetime import timedelta
from typing import Any

import amqp.exceptions
import kombu.exceptions
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs import lifecycle
from jobs.errors import OffloadError
from jobs.models import TERMINAL_STATUSES, Job
from jobs.runtime import current_run
from notifications import metrics, outbound, signing
from notifications.models import (
    CallbackSecret,
    Delivery,
    DeliveryStatus,
    Endpoint,
    SigningSecret,
)

logger = logging.getLogger(__name__)

DELIVER_KIND = "webhook.deliver"
EVENT_TYPES = tuple(f"job.{status}" for status in sorted(TERMINAL_STATUSES))
BROKER_ERRORS = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.AMQPError)


# --- secrets ---------------------------------------------------------------------------


def signing_secrets(*, holder: SigningSecret) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one while
    its grace period lasts."""
    valid = [holder.secret]
    if (
        holder.previous_secret
        and holder.previous_valid_until
        and holder.previous_valid_until > timezone.now()
    ):
        valid.append(holder.previous_secret)
    return valid


def secret_rotate(*, holder: SigningSecret) -> SigningSecret:
    """A new secret; the old one keeps signing for `OFFLOAD_WEBHOOK_SECRET_GRACE` seconds."""
    holder.previous_secret = holder.secret
    holder.previous_valid_until = timezone.now() + timedelta(
        seconds=settings.OFFLOAD_WEBHOOK_SECRET_GRACE
    )
    holder.secret = signing.secret_generate()
    holder.save(update_fields=["secret", "previous_secret", "previous_valid_until"])
    return holder


def callback_secret_get(*, owner: AbstractBaseUser) -> CallbackSecret:
    holder, _ = CallbackSecret.objects.get_or_create(
        owner=owner, defaults={"secret": signing.secret_generate()}
    )
    return holder


# --- endpoints -------------------------------------------------------------------------


def _event_types_validate(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise OffloadError(
            f"Unknown event type {', '.join(unknown)}; use {', '.join(EVENT_TYPES)}.",
            fields={"event_types": [f"unknown: {', '.join(unknown)}"]},
        )
    return sorted(set(event_types))


def endpoint_create(
    *,
    owner: AbstractBaseUser,
    url: str,
    event_types: list[str],
    description: str = "",
    enabled: bool = True,
) -> Endpoint:
    return Endpoint.objects.create(
        owner=owner,
        url=outbound.url_check(url),
        event_types=_event_types_validate(event_types),
        description=description,
        enabled=enabled,
        secret=signing.secret_generate(),
    )


def endpoint_update(*, endpoint: Endpoint, **changes: Any) -> Endpoint:
    if "url" in changes:
        endpoint.url = outbound.url_check(changes["url"])
    if "event_types" in changes:
        endpoint.event_types = _event_types_validate(changes["event_types"])
    if "description" in changes:
        endpoint.description = changes["description"]
    if "enabled" in changes:
        endpoint.enabled = changes["enabled"]
        if endpoint.enabled:
            endpoint.disabled_reason = ""
    endpoint.save()
    return endpoint


# --- queueing --------------------------------------------------------------------------


# Returned by each terminal job move (jobs/lifecycle.py): most owners have no endpoint, and
# their finished jobs then cost no endpoints query.
HAS_ENDPOINTS = "owner_has_endpoints"
HAS_ENDPOINTS_SQL = (
    f"EXISTS (SELECT 1 FROM {Endpoint._meta.db_table} e "  # noqa: S608
    f"WHERE e.owner_id = {Job._meta.db_table}.owner_id AND e.enabled)"
)


def deliveries_queue_for_event(event: dict[str, Any], row: dict[str, Any]) -> None:
    """The events hook (jobs/events.py): queue the deliveries of a terminal event. Never
    fails the job move it follows; a delivery left pending is released by the sweeper."""
    owner_id = row.get("owner_id")
    if event["status"] not in TERMINAL_STATUSES or owner_id is None:
        return
    if event["kind"] == DELIVER_KIND:
        return
    has_endpoints = row.get(HAS_ENDPOINTS)
    if not row.get("callback_url") and has_endpoints is not None and not has_endpoints:
        return  # the finishing statement found no enabled endpoint of the owner's
    try:
        deliveries = deliveries_create(
            event=event, owner_id=owner_id, callback_url=row.get("callback_url") or ""
        )
        for delivery in deliveries:
            delivery_submit(delivery_id=delivery.id)
    except (DatabaseError, OffloadError, *BROKER_ERRORS) as exc:
        logger.warning("webhooks for job %s not queued yet: %s", event["job_id"], exc)


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    data = {key: value for key, value in event.items() if key != "owner_id"}
    return {"type": f"job.{event['status']}", "timestamp": event["at"], "data": data}


def deliveries_create(*, event: dict[str, Any], owner_id: int, callback_url: str) -> list[Delivery]:
    event_type = f"job.{event['status']}"
    targets: list[tuple[Endpoint | None, str]] = []
    if callback_url:
        targets.append((None, callback_url))
    for endpoint in Endpoint.objects.filter(owner_id=owner_id, enabled=True):
        if not endpoint.event_types or event_type in endpoint.event_types:
            targets.append((endpoint, endpoint.url))
    created = []
    for endpoint, url in targets:
        key = f"{event['job_id']}:{event['version']}:{endpoint.pk if endpoint else 'callback'}"
        delivery = Delivery(
            owner_id=owner_id,
            endpoint=endpoint,
            job_id=event["job_id"],
            url=url,
            event_type=event_type,
            message_id=f"msg_{key.replace(':', '_')}"[:64],
            dedupe_key=key,
            payload=_payload(event),
        )
        try:
            with transaction.atomic():
                delivery.save(force_insert=True)
        except IntegrityError:
            continue  # this event was queued already
        created.append(delivery)
    return created


def delivery_submit(*, delivery_id: Any) -> None:
    from jobs.services import JobSpec, job_submit

    job_submit(
        spec=JobSpec(kind=DELIVER_KIND, params={"delivery_id": str(delivery_id)}), owner=None
    )


# --- sending ---------------------------------------------------------------------------


# pending|retrying -> sending, returning what the attempt needs, with the signing secrets of
# the delivery's endpoint or else of its owner's callbacks.
_CLAIM_SQL = """
UPDATE {delivery} SET status = {sending}, attempts = attempts + 1, updated_at = {now}
WHERE id = {delivery_id} AND status IN ({pending}, {retrying})
RETURNING attempts, owner_id, endpoint_id, url, message_id, payload, log,
    (SELECT secret FROM {endpoint} e WHERE e.id = {delivery}.endpoint_id) AS e_secret,
    (SELECT previous_secret FROM {endpoint} e WHERE e.id = {delivery}.endpoint_id)
        AS e_previous_secret,
    (SELECT previous_valid_until FROM {endpoint} e WHERE e.id = {delivery}.endpoint_id)
        AS e_previous_valid_until,
    (SELECT secret FROM {callback} c WHERE c.owner_id = {delivery}.owner_id) AS c_secret,
    (SELECT previous_secret FROM {callback} c WHERE c.owner_id = {delivery}.owner_id)
        AS c_previous_secret,
    (SELECT previous_valid_until FROM {callback} c WHERE c.owner_id = {delivery}.owner_id)
        AS c_previous_valid_until
"""
_CLAIM_COLUMNS = (
    "attempts",
    "owner_id",
    "endpoint_id",
    "url",
    "message_id",
    "payload",
    "log",
    "e_secret",
    "e_previous_secret",
    "e_previous_valid_until",
    "c_secret",
    "c_previous_secret",
    "c_previous_valid_until",
)


def _claim_sql(**values: str) -> str:
    return _CLAIM_SQL.format(
        delivery=Delivery._meta.db_table,
        endpoint=Endpoint._meta.db_table,
        callback=CallbackSecret._meta.db_table,
        **values,
    )


# Delivery bookkeeping (the claim and the attempt's record) commits without waiting for its
# WAL flush. A write lost to a PostgreSQL crash (a server crash, not a worker's) leaves the
# delivery pending or sending, and the sweeper sends it again: a duplicate, which at-least-
# once delivery allows (receivers dedupe on `webhook-id`). It saves a disk flush per write.
# `SET LOCAL` rides in the same simple-protocol query, so it costs no round trip; with
# server-side binding (one statement per query) the writes stay synchronous.
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF;\n"


def _bookkeeping_execute(cursor: Any, sql: str, params: list[Any]) -> None:
    if lifecycle.multi_statement_ok():
        cursor.execute(_ASYNC_COMMIT + sql, params)
        cursor.nextset()  # to the write's own result
    else:
        cursor.execute(sql, params)


def delivery_claim_with_job() -> None:
    """On PostgreSQL the claim read of a `webhook.deliver` job also claims its delivery
    (same query, same asynchronous commit): an attempt costs one round trip less. The
    delivery is claimed only if the job is waiting to run; its id comes from the job's
    params, and a malformed one matches nothing (no cast error)."""
    job = lifecycle.CLAIMED_ROW
    delivery_id = f"(SELECT {lifecycle.params_uuid_sql('delivery_id', row=job)} FROM {job})"  # noqa: S608
    sql = _claim_sql(
        sending=f"'{DeliveryStatus.SENDING}'",
        now="statement_timestamp()",
        delivery_id=delivery_id,
        pending=f"'{DeliveryStatus.PENDING}'",
        retrying=f"'{DeliveryStatus.RETRYING}'",
    )
    lifecycle.claim_write_add(DELIVER_KIND, "delivery", sql, ahead=_ASYNC_COMMIT)


def _claim(delivery_id: uuid.UUID) -> dict[str, Any] | None:
    """pending|retrying -> sending, once (a duplicate attempt job sends nothing), and the
    delivery with its signing secrets, in one statement: this is the hot path."""
    bound = "%s"
    sql = _claim_sql(sending=bound, now=bound, delivery_id=bound, pending=bound, retrying=bound)
    native_uuid = connection.features.has_native_uuid_field
    now = timezone.now()
    params = [
        DeliveryStatus.SENDING,
        now if connection.vendor == "postgresql" else now.isoformat(" "),
        delivery_id if native_uuid else delivery_id.hex,
        DeliveryStatus.PENDING,
        DeliveryStatus.RETRYING,
    ]
    with connection.cursor() as cursor:
        _bookkeeping_execute(cursor, sql, params)
        row = cursor.fetchone()
    return None if row is None else dict(zip(_CLAIM_COLUMNS, row, strict=True))


def _claimed(delivery_id: uuid.UUID, row: dict[str, Any]) -> tuple[Delivery, list[str]]:
    """The claimed delivery and its signing secrets, from the claim's row."""
    delivery = Delivery(
        id=delivery_id,
        attempts=row["attempts"],
        owner_id=row["owner_id"],
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        message_id=row["message_id"],
        payload=_json(row["payload"]),
        log=_json(row["log"]),
        status=DeliveryStatus.SENDING,
    )
    delivery._state.adding = False
    prefix = "e_" if delivery.endpoint_id is not None else "c_"
    if row[prefix + "secret"] is None:  # the owner's callback secret does not exist yet
        return delivery, signing_secrets(holder=callback_secret_get(owner=delivery.owner))
    holder = CallbackSecret(
        secret=row[prefix + "secret"],
        previous_secret=row[prefix + "previous_secret"] or "",
        previous_valid_until=_when(row[prefix + "previous_valid_until"]),
    )
    return delivery, signing_secrets(holder=holder)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _when(value: Any) -> Any:
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        return parse_datetime(value)
    return value


def retry_delay(attempt: int) -> float | None:
    """Seconds before the attempt after `attempt`, or None when the schedule is spent."""
    schedule = settings.OFFLOAD_WEBHOOK_RETRY_SCHEDULE
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(0.8, 1.2)


UNCLAIMED = object()


def delivery_send(*, delivery_id: Any, claim: Any = UNCLAIMED) -> dict[str, Any]:
    """One attempt; records it and decides what comes next. Returns the attempt's summary.
    `claim`: the delivery's claim row when the job's claim read made it (None: it found
    the delivery already claimed or finished); UNCLAIMED: the delivery is claimed here."""
    delivery_id = uuid.UUID(str(delivery_id))
    row = _claim(delivery_id) if claim is UNCLAIMED else claim
    if row is None:
        return {"skipped": True}
    delivery, secrets = _claimed(delivery_id, row)
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = signing.headers(
        secrets, message_id=delivery.message_id, timestamp=timestamp, body=body
    )
    entry: dict[str, Any] = {
        "attempt": delivery.attempts,
        "at": timezone.now().isoformat(),
        "request": {"url": delivery.url, "headers": headers, "body_bytes": len(body)},
    }
    try:
        target = outbound.target_resolve(delivery.url)
    except outbound.UnsafeURL as exc:
        entry.update(status_code=None, latency_ms=0.0, error=exc.message)
        return _record(delivery, entry, outcome=DeliveryStatus.FAILED)
    entry["request"]["address"] = str(target.address)
    response = outbound.post(target, body=body, headers=headers)
    entry.update(
        status_code=response.status_code,
        latency_ms=round(response.latency_ms, 1),
        error=response.error,
        response_body=response.body[:200],
    )
    if response.status_code is not None and 200 <= response.status_code < 300:
        return _record(delivery, entry, outcome=DeliveryStatus.SUCCEEDED)
    if response.status_code == 410:
        if delivery.endpoint_id is not None:
            Endpoint.objects.filter(id=delivery.endpoint_id).update(
                enabled=False, disabled_reason="the receiver answered 410 Gone"
            )
        return _record(delivery, entry, outcome=DeliveryStatus.FAILED)
    if response.status_code is not None and not response.error:
        entry["error"] = f"the receiver answered {response.status_code}"
    return _record(delivery, entry, outcome=DeliveryStatus.RETRYING)


_RECORD_SQL = """
UPDATE {delivery} SET status = %s, next_attempt_at = %s, last_status_code = %s,
    last_error = %s, last_latency_ms = %s, log = %s, updated_at = %s
WHERE id = %s
"""


def _record(delivery: Delivery, entry: dict[str, Any], *, outcome: str) -> dict[str, Any]:
    delay = retry_delay(delivery.attempts) if outcome == DeliveryStatus.RETRYING else None
    if outcome == DeliveryStatus.RETRYING and delay is None:
        outcome = DeliveryStatus.FAILED
    now = timezone.now()
    delivery.status = outcome
    delivery.next_attempt_at = now + timedelta(seconds=delay) if delay is not None else None
    delivery.last_status_code = entry.get("status_code")
    delivery.last_error = (entry.get("error") or "")[:500]
    delivery.last_latency_ms = entry.get("latency_ms")
    delivery.log = [*delivery.log, entry][-50:]
    # One plain UPDATE: this runs once per attempt, on the hottest path of the queue.
    postgres = connection.vendor == "postgresql"

    def when(value: Any) -> Any:
        return value if postgres or value is None else value.isoformat(" ")

    sql = _RECORD_SQL.format(delivery=Delivery._meta.db_table)
    params = [
        outcome,
        when(delivery.next_attempt_at),
        delivery.last_status_code,
        delivery.last_error,
        delivery.last_latency_ms,
        json.dumps(delivery.log, separators=(",", ":")),
        when(now),
        delivery.id if connection.features.has_native_uuid_field else delivery.id.hex,
    ]
    run = current_run()
    if run is not None and outcome != DeliveryStatus.RETRYING:
        # A final outcome rides with the attempt job's own final write: one round trip and
        # one commit. (A retry is written now: its release task is queued right after.)
        run.with_finish(sql, params)
    else:
        with connection.cursor() as cursor:
            _bookkeeping_execute(cursor, sql, params)
    metrics.attempt_count(outcome=outcome)
    if delay is not None and delay <= settings.OFFLOAD_WEBHOOK_COUNTDOWN_MAX:
        from notifications.tasks import delivery_release_task

        delivery_release_task.apply_async(args=(str(delivery.id),), countdown=delay)
    return {
        "delivery_id": str(delivery.id),
        "attempt": delivery.attempts,
        "status": outcome,
        "status_code": entry.get("status_code"),
        "error": delivery.last_error,
    }


# --- retries and redelivery ------------------------------------------------------------


def delivery_release(*, delivery_id: Any) -> bool:
    """Queue the next attempt of a retrying delivery that is due."""
    released = Delivery.objects.filter(
        id=delivery_id,
        status=DeliveryStatus.RETRYING,
        next_attempt_at__lte=timezone.now() + timedelta(seconds=1),
    ).update(status=DeliveryStatus.PENDING, updated_at=timezone.now())
    if released:
        delivery_submit(delivery_id=delivery_id)
    return bool(released)


def deliveries_release_due(*, limit: int = 1000) -> int:
    """The periodic sweep: due retries, plus deliveries whose attempt job was lost (pending
    or sending for far longer than an attempt can take)."""
    now = timezone.now()
    stale = now - timedelta(seconds=2 * settings.OFFLOAD_WEBHOOK_TIMEOUT + 60)
    ids = list(
        Delivery.objects.filter(
            Q(status=DeliveryStatus.RETRYING, next_attempt_at__lte=now)
            | Q(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING], updated_at__lt=stale)
        ).values_list("id", flat=True)[:limit]
    )
    count = 0
    for delivery_id in ids:
        moved = (
            Delivery.objects.filter(id=delivery_id)
            .exclude(status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED])
            .update(status=DeliveryStatus.PENDING, updated_at=now)
        )
        if moved:
            delivery_submit(delivery_id=delivery_id)
            count += 1
    return count


def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again now, whatever became of it (same `webhook-id`)."""
    if delivery.status == DeliveryStatus.SENDING:
        raise OffloadError(
            "This delivery is being sent right now; redeliver it after this attempt.",
            code="delivery_in_progress",
            status=409,
        )
    Delivery.objects.filter(id=delivery.id).update(
        status=DeliveryStatus.PENDING, next_attempt_at=None, updated_at=timezone.now()
    )
    delivery_submit(delivery_id=delivery.id)
    delivery.refresh_from_db()
    return delivery
