"""Job events: one message per status or progress change, published after commit.

Body: `{job_id, kind, status, version, progress, result|error, at}`; routing key
`job.<kind>.<status>` on the topic exchange `offload.events`. A lost event costs a
listener latency, never correctness: every stream starts from a database snapshot, so
publishing never fails the change that caused it.
"""

import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions
from django.conf import settings

logger = logging.getLogger(__name__)


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
    """One connection per process (re-made after fork), no publisher confirms, and a
    background thread that does the sending: events are best-effort by design and must
    not slow the job they describe. Order is kept (one FIFO per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.exchange = kombu.Exchange(settings.OFFLOAD_EVENTS_EXCHANGE, type="topic", durable=True)

    def submit(self, event: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    self._connection = self._producer = None
                    threading.Thread(target=self._loop, name="offload-events", daemon=True).start()
                    self._pid = os.getpid()
        self._queue.put(event)

    def _loop(self) -> None:
        while True:
            self.publish(self._queue.get())

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued events are sent (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)

    def _producer_get(self) -> kombu.Producer:
        if self._producer is None:
            self._connection = kombu.Connection(
                settings.CELERY_BROKER_URL,
                connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            )
            self._producer = kombu.Producer(self._connection.channel(), exchange=self.exchange)
            self.exchange(self._producer.channel).declare()
        return self._producer

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self._producer_get().publish(
                event,
                routing_key=routing_key(event),
                serializer="json",
                delivery_mode=1,
                retry=False,
            )
        except (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
            logger.warning("job event for %s not published: %s", event["job_id"], exc)
            self.reset()

    def reset(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._producer = None


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


def events_flush() -> None:
    if _publisher is not None:
        _publisher.flush()
