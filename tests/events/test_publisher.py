"""The events publisher: each process sends its events from one thread, in order, and what
the broker cannot take is dropped (one connect attempt per pause, a bounded queue), never
piled up."""

import contextlib
import logging
import os
import socket
import threading

import kombu
import pytest

from jobs import events
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def publisher(monkeypatch):
    """A publisher of this test's own (its sending thread idles on once the test is over)."""
    monkeypatch.setattr(events, "_publisher", None)
    yield lambda: events._publisher
    if events._publisher is not None:
        events._publisher._close()


def _event(kind: str, job: str, version: int) -> dict:
    return {"job_id": job, "kind": kind, "status": "running", "version": version}


class DeadBroker:
    """A loopback listener that closes every connection at once and counts them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server = socket.create_server(("127.0.0.1", free_port()))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.server.getsockname()[1]}//"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            client.close()

    def close(self) -> None:
        self.server.close()


def test_events_from_several_threads_arrive_each_once_and_in_order(publisher):
    kind = f"publishertest{free_port()}"
    exchange = kombu.Exchange("offload.events", type="topic", durable=True)
    queue = kombu.Queue("", exchange, routing_key=f"job.{kind}.#", exclusive=True)
    received: list[dict] = []
    with (
        kombu.Connection(BROKER_URL) as conn,
        conn.Consumer(queue, callbacks=[lambda body, message: received.append(body)]),
    ):
        threads = [
            threading.Thread(
                target=lambda job=job: [
                    events.event_publish(_event(kind, job, version)) for version in range(1, 51)
                ]
            )
            for job in ("a", "b", "c", "d")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        def all_received() -> bool:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
            return len(received) >= 200

        wait_for(all_received, timeout=30, what="200 events")
    for job in ("a", "b", "c", "d"):
        versions = [event["version"] for event in received if event["job_id"] == job]
        assert versions == list(range(1, 51))
    assert all(event["kind"] == kind for event in received)


def test_an_unreachable_broker_costs_one_connect_per_pause(publisher, settings, caplog):
    dead = DeadBroker()
    settings.CELERY_BROKER_URL = dead.url
    settings.OFFLOAD_EVENTS_RETRY_AFTER = 60
    caplog.set_level(logging.WARNING, logger="jobs.events")
    try:
        events.event_publish(_event("demo.sleep", "x", 1))
        wait_for(lambda: "events are dropped for 60 s" in caplog.text, what="the failure")
        for version in range(2, 22):
            events.event_publish(_event("demo.sleep", "x", version))
        wait_for(lambda: publisher()._dropped == 20, what="20 events dropped while paused")
        assert dead.accepted == 1, "a paused publisher must not connect again"

        # Once the pause is over it connects again, and says what it dropped.
        publisher()._paused_until = 0.0
        events.event_publish(_event("demo.sleep", "x", 22))
        wait_for(lambda: dead.accepted == 2, what="a connect after the pause")
        wait_for(lambda: "20 job event(s) were dropped" in caplog.text, what="the count")
    finally:
        dead.close()


def test_events_waiting_for_the_sending_thread_are_bounded(publisher, settings, monkeypatch):
    settings.OFFLOAD_EVENTS_QUEUE_MAX = 3
    stalled = events._AmqpPublisher()
    stalled._pid = os.getpid()  # its sending thread counts as started: none drains the queue
    monkeypatch.setattr(events, "_publisher", stalled)

    for version in range(1, 11):
        events.event_publish(_event("demo.sleep", "z", version))

    assert stalled._queue.qsize() == 3
    assert stalled._dropped == 7
