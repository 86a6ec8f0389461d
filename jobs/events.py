"""Job events: one message per status or progress change, published after commit.

Body: `{job_id, kind, status, version, progress, result|error, at}`; routing key
`job.<kind>.<status>` on the topic exchange `offload.events`. A lost event costs a
listener latency, never correctness: every stream starts from a database snapshot, so
publishing never fails the change that caused it.
"""

import contextlib
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import amqp
import amqp.exceptions
import kombu
import kombu.exceptions
from django.conf import settings
from kombu.utils import json

logger = logging.getLogger(__name__)
PUBLISH_ERRORS = (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError)


def event_from_row(row: dict[str, Any]) -> dict[str, Any]:
    event = {
        "job_id": str(row["id"]),
        "kind": row["kind"],
        "status": row["status"],
        "version": row["version"],
        "progress": {
            "percent": row.get("progress_percent"),
            "current": row.get("progress_current"),
            "total": row.get("progress_total"),
            "message": row.get("progress_message") or "",
        },
        "at": datetime.now(UTC).isoformat(),
    }
    if row.get("result") is not None:
        event["result"] = row["result"]
    if row.get("error") is not None:
        event["error"] = row["error"]
    if row.get("owner_id") is not None:
        event["owner_id"] = row["owner_id"]
    return event


def routing_key(event: dict[str, Any]) -> str:
    return f"job.{event['kind']}.{event['status']}"


class _AmqpPublisher:
    """One connection per process (made again after a fork), no publisher confirms, and a
    background thread that does the sending: events are best-effort by design and must
    not slow the job they describe. Order is kept (one FIFO per process).

    What the broker cannot take is dropped, never piled up: after a failed publish the
    thread drops events for OFFLOAD_EVENTS_RETRY_AFTER seconds before it connects again
    (one attempt per host of the broker URL, no waiting between them), so a broker that is
    down costs one connect per pause and its outage leaves no backlog of stale events to
    send when it returns; and at most OFFLOAD_EVENTS_QUEUE_MAX events wait in memory. What
    is dropped is counted and logged when publishing resumes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._paused_until = 0.0
        self._dropped = 0
        self.exchange = settings.OFFLOAD_EVENTS_EXCHANGE

    def submit(self, event: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    # After a fork the parent's connection is left alone: closing it would
                    # close the parent's socket.
                    self._queue = queue.SimpleQueue()
                    self._connection = self._channel = None
                    threading.Thread(target=self._loop, name="offload-events", daemon=True).start()
                    self._pid = os.getpid()
        if self._queue.qsize() >= settings.OFFLOAD_EVENTS_QUEUE_MAX:
            self._dropped += 1  # only the sending thread resets it: a miscount is harmless
            return
        self._queue.put(event)

    def _loop(self) -> None:
        while True:
            self.publish(self._queue.get())

    def _channel_get(self) -> Any:
        if self._connection is None:
            self._connection = kombu.Connection(
                settings.CELERY_BROKER_URL,
                connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            )
        if self._channel is None:
            # Each host of a cluster URL once, without kombu's sleeps between rounds.
            hosts = max(len(self._connection.alt), 1)
            self._connection.ensure_connection(max_retries=hosts - 1, interval_start=0)
            channel = self._connection.channel()
            kombu.Exchange(self.exchange, type="topic", durable=True)(channel).declare()
            self._channel = channel
        return self._channel

    def publish(self, event: dict[str, Any]) -> None:
        """Send one event (in the sending thread)."""
        if time.monotonic() < self._paused_until:
            self._dropped += 1
            return
        if self._dropped:
            logger.warning("%d job event(s) were dropped, not published", self._dropped)
            self._dropped = 0
        message = amqp.Message(
            json.dumps(event).encode(),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=1,
        )
        try:
            self._channel_get().basic_publish(
                message, exchange=self.exchange, routing_key=routing_key(event)
            )
        except PUBLISH_ERRORS as exc:
            logger.warning(
                "job event for %s not published; events are dropped for %s s: %s",
                event["job_id"],
                settings.OFFLOAD_EVENTS_RETRY_AFTER,
                exc,
            )
            self._paused_until = time.monotonic() + settings.OFFLOAD_EVENTS_RETRY_AFTER
            self._close()

    def _close(self) -> None:
        """Close the connection; it is kept, so the next attempt tries the next host."""
        self._channel = None
        if self._connection is not None:
            broker_connection_close(self._connection)


def broker_connection_close(connection: kombu.Connection) -> None:
    """Close a broker connection, waiting at most a second for the broker's answer: a
    connection a middlebox dropped never answers."""
    with contextlib.suppress(*PUBLISH_ERRORS, AttributeError):
        if connection.connected:
            connection.connection.sock.settimeout(1.0)
    with contextlib.suppress(*PUBLISH_ERRORS):
        connection.release()


_publisher: _AmqpPublisher | None = None
_publisher_lock = threading.Lock()
_listeners: list = []
_row_hooks: list = []


def listener_add(callback: Any) -> None:
    """In-process listeners (tests, the quickstart fallback) receive every event."""
    _listeners.append(callback)


def listener_remove(callback: Any) -> None:
    _listeners.remove(callback)


def row_hook_add(callback: Any) -> None:
    """Hooks called with (event, row) in the process that made the change, after commit:
    the row carries what the public event leaves out (e.g. `callback_url`). Webhook
    deliveries are queued from here (notifications/services.py)."""
    if callback not in _row_hooks:
        _row_hooks.append(callback)


def event_publish(event: dict[str, Any], *, row: dict[str, Any] | None = None) -> None:
    global _publisher
    for callback in list(_listeners):
        callback(event)
    if row is not None:
        for hook in list(_row_hooks):
            hook(event, row)
    if settings.OFFLOAD_EVENTS_BACKEND == "amqp":
        if _publisher is None:
            with _publisher_lock:  # a thread pool's first events may come together
                if _publisher is None:
                    _publisher = _AmqpPublisher()
        _publisher.submit(event)
