"""Job events inside one web process: one source, many in-memory subscribers.

Each web (ASGI) process holds ONE source of events and fans every event out in memory to
its SSE streams and WebSocket sockets, so a thousand open streams cost one broker
consumer, not a thousand database pollers.

- `amqp` (a real deployment): an exclusive, auto-delete queue bound to the
  `offload.events` topic exchange (`job.#`), consumed by one background thread.
- `none` (the quickstart, where kombu's filesystem transport has no topic exchanges):
  one background thread per process reads, every `OFFLOAD_EVENTS_POLL_INTERVAL` seconds,
  the versions of the jobs that somebody in this process is watching (one query for all
  of them) and turns each change into an event. Intermediate versions that came and went
  between two reads are not seen; the latest state always is.

A subscriber registers before its stream reads its snapshot from the database, so no
change is lost between the two; when the broker connection drops, every subscriber is
told to re-read its snapshot (`RESYNC`), so a lost event costs latency, never correctness.
"""

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from jobs.events import event_from_row
from jobs.models import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

RESYNC = {"type": "resync"}  # a sentinel: "events may have been lost, re-read the database"
OVERFLOW = {"type": "overflow"}  # a sentinel: "you fell behind; close and let the client resume"


class Subscriber:
    """What one stream or socket wants to hear: some job ids, one owner's jobs, or all."""

    def __init__(
        self,
        hub: "Hub",
        loop: asyncio.AbstractEventLoop,
        *,
        job_ids: Iterable[str] = (),
        owner_id: int | None = None,
        everything: bool = False,
    ) -> None:
        self.hub = hub
        self.loop = loop
        self.job_ids: set[str] = {str(job_id) for job_id in job_ids}
        self.owner_id = owner_id
        self.everything = everything
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def matches(self, event: dict[str, Any]) -> bool:
        if self.everything or event["job_id"] in self.job_ids:
            return True
        return self.owner_id is not None and event.get("owner_id") == self.owner_id

    def watch(self, job_id: str) -> None:
        self.hub.watch(self, str(job_id))

    def _put(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= settings.OFFLOAD_EVENTS_SUBSCRIBER_BUFFER:
            # A client that reads slower than events arrive must not grow this process
            # without bound: it is told to go, and resumes from a snapshot.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)
            self.closed = True
            return
        self.queue.put_nowait(event)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after `timeout` seconds of silence (time for a keep-alive)."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.closed = True
        self.hub.unsubscribe(self)


class Hub:
    """The process's registry of subscribers; the source thread calls `dispatch`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self._by_job: dict[str, set[Subscriber]] = {}
        self._by_owner: dict[int, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._source: _Source | None = None
        self._pid = 0

    # --- subscribers ---------------------------------------------------------------

    def subscribe(
        self,
        *,
        job_ids: Iterable[str] = (),
        owner_id: int | None = None,
        everything: bool = False,
    ) -> Subscriber:
        """Register a subscriber on the running event loop. The caller reads its snapshot
        after this returns, and must `close()` it (a `finally`) when the client goes."""
        subscriber = Subscriber(
            self,
            asyncio.get_running_loop(),
            job_ids=job_ids,
            owner_id=owner_id,
            everything=everything,
        )
        with self._lock:
            self._subscribers.add(subscriber)
            for job_id in subscriber.job_ids:
                self._by_job.setdefault(job_id, set()).add(subscriber)
            if owner_id is not None:
                self._by_owner.setdefault(owner_id, set()).add(subscriber)
            if everything:
                self._everything.add(subscriber)
        self.source_start()
        return subscriber

    def watch(self, subscriber: Subscriber, job_id: str) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                subscriber.job_ids.add(job_id)
                self._by_job.setdefault(job_id, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)
            for job_id in subscriber.job_ids:
                _discard(self._by_job, job_id, subscriber)
            if subscriber.owner_id is not None:
                _discard(self._by_owner, subscriber.owner_id, subscriber)
            self._everything.discard(subscriber)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "subscribers": len(self._subscribers),
                "watched_jobs": len(self._by_job),
                "watched_owners": len(self._by_owner),
                "source": self._source.name if self._source else None,
                "source_ready": bool(self._source and self._source.ready.is_set()),
            }

    def watched(self) -> tuple[set[str], set[int], bool]:
        with self._lock:
            return set(self._by_job), set(self._by_owner), bool(self._everything)

    # --- events --------------------------------------------------------------------

    def dispatch(self, event: dict[str, Any]) -> None:
        """Called from the source thread: hand the event to each matching subscriber on
        its own event loop (one thread-safe call per loop, not per subscriber)."""
        with self._lock:
            matched = set(self._everything)
            matched |= self._by_job.get(event.get("job_id"), set())
            owner = event.get("owner_id")
            if owner is not None:
                matched |= self._by_owner.get(owner, set())
        self._deliver(matched, _public(event))

    def resync(self) -> None:
        with self._lock:
            everyone = set(self._subscribers)
        self._deliver(everyone, RESYNC)

    def _deliver(self, subscribers: set[Subscriber], event: dict[str, Any]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
        for subscriber in subscribers:
            by_loop.setdefault(subscriber.loop, []).append(subscriber)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, group, event)
            except RuntimeError:  # that loop has closed: its subscribers are gone
                for subscriber in group:
                    self.unsubscribe(subscriber)

    # --- the source ----------------------------------------------------------------

    def source_start(self) -> None:
        if self._source is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._source is not None and self._pid == os.getpid():
                return
            if settings.OFFLOAD_EVENTS_BACKEND == "amqp":
                self._source = _AmqpSource(self)
            else:
                self._source = _DatabaseSource(self)
            self._pid = os.getpid()
            self._source.start()

    async def source_ready(self, timeout: float = 5.0) -> bool:
        """Wait until the source receives events (the broker queue is bound): a stream
        that reads its snapshot after this misses nothing."""
        source = self._source
        if source is None:
            return False
        if source.ready.is_set():
            return True
        return await asyncio.to_thread(source.ready.wait, timeout)


def _discard(index: dict, key: Any, subscriber: Subscriber) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(subscriber)
        if not group:
            del index[key]


def _put_all(subscribers: list[Subscriber], event: dict[str, Any]) -> None:
    for subscriber in subscribers:
        subscriber._put(event)


def _public(event: dict[str, Any]) -> dict[str, Any]:
    """The event as clients see it: without the owner's internal user id."""
    return {key: value for key, value in event.items() if key != "owner_id"}


class _Source:
    name = ""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"offload-fanout-{self.name}", daemon=True).start()

    def run(self) -> None:
        raise NotImplementedError


class _AmqpSource(_Source):
    name = "amqp"

    def run(self) -> None:
        exchange = kombu.Exchange(settings.OFFLOAD_EVENTS_EXCHANGE, type="topic", durable=True)
        queue_name = (
            f"offload.events.web.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        )
        queue = kombu.Queue(
            queue_name,
            exchange=exchange,
            routing_key="job.#",
            exclusive=True,
            auto_delete=True,
            durable=False,
        )
        while True:
            try:
                self._consume(queue)
            except (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
                logger.warning("job events subscription lost (%s); reconnecting", exc)
            self.ready.clear()
            threading.Event().wait(1.0)

    def _consume(self, queue: kombu.Queue) -> None:
        with (
            kombu.Connection(
                settings.CELERY_BROKER_URL,
                connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
                heartbeat=30,
            ) as connection,
            connection.Consumer(queue, callbacks=[self._on_message], no_ack=True, accept=["json"]),
        ):
            was_lost = not self.ready.is_set() and getattr(self, "_connected_once", False)
            self._connected_once = True
            self.ready.set()
            if was_lost:
                self.hub.resync()
            while True:
                try:
                    connection.drain_events(timeout=2)
                except TimeoutError:
                    connection.heartbeat_check()

    def _on_message(self, body: Any, message: Any) -> None:
        if isinstance(body, dict) and "job_id" in body:
            self.hub.dispatch(body)


class _DatabaseSource(_Source):
    """The quickstart's fallback: one query per interval for all watched jobs."""

    name = "database"

    def run(self) -> None:
        from jobs.models import Job

        versions: dict[str, int] = {}
        self.ready.set()
        fields = (
            "id",
            "kind",
            "status",
            "version",
            "owner_id",
            "progress_percent",
            "progress_current",
            "progress_total",
            "progress_message",
            "result",
            "error",
        )
        finished: dict[str, float] = {}  # owners' finished jobs already told, and when
        while True:
            interval = settings.OFFLOAD_EVENTS_POLL_INTERVAL
            threading.Event().wait(interval)
            job_ids, owners, everything = self.hub.watched()
            if not (job_ids or owners or everything):
                versions.clear()
                continue
            # A job that starts and finishes between two reads is found by its finish time.
            window = 3 * interval + 1.0
            now = time.time()
            try:
                close_old_connections()
                rows = _watched_rows(
                    Job, fields, job_ids, owners, everything, set(versions), since=now - window
                )
                seen = {}
                for row in rows:
                    key = str(row["id"])
                    done = row["status"] in TERMINAL_STATUSES
                    if done and key not in job_ids and key in finished:
                        continue
                    if versions.get(key) != row["version"]:
                        self.hub.dispatch(event_from_row(row))
                    # A finished job is kept only while somebody names it; an owner's
                    # finished job drops out after its last event.
                    if not done or key in job_ids:
                        seen[key] = row["version"]
                    else:
                        finished[key] = now
                versions = seen
                finished = {k: t for k, t in finished.items() if t > now - 2 * window}
            except DatabaseError as exc:
                logger.warning("job events fallback: database read failed: %s", exc)


def _watched_rows(
    job_model: Any,
    fields: tuple[str, ...],
    job_ids: set[str],
    owners: set[int],
    everything: bool,
    known: set[str],
    *,
    since: float,
) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from django.db.models import Q

    recent = datetime.fromtimestamp(since, tz=UTC)
    current = ~Q(status__in=TERMINAL_STATUSES) | Q(finished_at__gte=recent)
    query = Q(id__in=job_ids | known)
    if owners:
        query |= Q(owner_id__in=owners) & current
    if everything:
        query |= current
    return list(job_model.objects.filter(query).values(*fields)[:10_000])


hub = Hub()
