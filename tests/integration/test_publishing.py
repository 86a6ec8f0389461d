"""Job messages published on the process's confirmed channel are the messages Celery's
`apply_async` publishes, and a call returns only once RabbitMQ has confirmed them."""

import socket
import uuid
from datetime import timedelta

import kombu
import pytest
from django.conf import settings
from django.utils import timezone

from jobs import publishing
from jobs.models import Job
from jobs.registry import kinds_all
from tests.support import queues_purge

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _job(kind, *, queue: str | None = None) -> Job:
    return Job(id=uuid.uuid4(), kind=kind.name, queue=queue or kind.queue, priority=7)


def _take(queue_name: str) -> kombu.Message:
    with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
        queue = next(q for q in settings.CELERY_TASK_QUEUES if q.name == queue_name)
        message = queue(conn.channel()).get(no_ack=True)
    assert message is not None, f"no message on {queue_name}"
    return message


def _shape(message: kombu.Message) -> dict:
    return {
        "headers": message.headers,
        "properties": message.properties,
        "body": message.body,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "exchange": message.delivery_info["exchange"],
        "routing_key": message.delivery_info["routing_key"],
    }


@pytest.mark.parametrize("expires", [False, True], ids=["plain", "expires"])
def test_every_kind_publishes_the_message_celery_would(no_worker, expires):
    queues_purge()
    expires = timezone.now() + timedelta(hours=1) if expires else None
    kinds = kinds_all()
    assert kinds
    for kind in kinds:
        job = _job(kind)
        kind.task.apply_async(
            args=(str(job.id),),
            task_id=str(job.id),
            queue=job.queue,
            priority=job.priority,
            expires=expires,
            retry=False,
        )
        by_celery = _shape(_take(job.queue))
        publishing.jobs_publish(jobs=[job], tasks=[kind.task], expires=expires)
        by_offload = _shape(_take(job.queue))

        # The TTL (ms) counts from each publish, so the two differ by the time between them.
        for shape in (by_celery, by_offload):
            ttl = shape["properties"].pop("expiration", None)
            if expires is None:
                assert ttl is None, kind.name
            else:
                assert 3_590_000 < int(ttl) <= 3_600_000, kind.name
        assert by_offload == by_celery, kind.name
        assert by_offload["headers"]["id"] == str(job.id)
        assert by_offload["properties"]["priority"] == 7
        assert by_offload["properties"]["delivery_mode"] == 2


def test_one_connection_serves_many_calls_and_a_broken_one_is_replaced(no_worker):
    queues_purge()
    kind = next(k for k in kinds_all() if k.name == "demo.sleep")
    publishing.jobs_publish(jobs=[_job(kind)], tasks=[kind.task])
    first = publishing._channel._connection
    publishing.jobs_publish(jobs=[_job(kind) for _ in range(3)], tasks=[kind.task] * 3)
    assert publishing._channel._connection is first

    # The network drops the connection between two submits: the next one reconnects.
    first.connection.sock.shutdown(socket.SHUT_RDWR)
    job = _job(kind)
    publishing.jobs_publish(jobs=[job], tasks=[kind.task])
    assert publishing._channel._connection is not first

    taken = [_take("default").headers["id"] for _ in range(5)]
    assert taken[-1] == str(job.id)


def test_a_connection_idle_too_long_is_reopened_before_use(no_worker, settings):
    queues_purge()
    kind = next(k for k in kinds_all() if k.name == "demo.sleep")
    publishing.jobs_publish(jobs=[_job(kind)], tasks=[kind.task])
    kept = publishing._channel._connection
    settings.OFFLOAD_PUBLISH_IDLE_REOPEN = 0  # every gap between calls is too long
    job = _job(kind)
    publishing.jobs_publish(jobs=[job], tasks=[kind.task])

    assert publishing._channel._connection is not kept
    assert not kept.connected  # closed, not left open on the broker
    assert [_take("default").headers["id"] for _ in range(2)][-1] == str(job.id)


def test_messages_the_broker_refuses_raise_and_are_not_reported_sent(no_worker):
    # A queue that holds nothing and refuses what would overflow it: RabbitMQ nacks every
    # publish to it, which is how a broker says it did not take a message.
    name = f"offload.test.refuse.{uuid.uuid4().hex[:8]}"
    with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_declare(
            name, auto_delete=False, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
    kind = next(k for k in kinds_all() if k.name == "demo.sleep")
    try:
        with pytest.raises(publishing.MessagesNotConfirmed, match="refused 2 of 2"):
            publishing.jobs_publish(
                jobs=[_job(kind, queue=name), _job(kind, queue=name)], tasks=[kind.task] * 2
            )
        # The channel is replaced, and the next submit goes through.
        job = _job(kind)
        publishing.jobs_publish(jobs=[job], tasks=[kind.task])
        assert _take("default").headers["id"] == str(job.id)
    finally:
        with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
            conn.default_channel.queue_delete(name)
