"""What a submit puts on RabbitMQ: the kind's queue, AMQP priority, persistence."""

import kombu
import pytest
from amqp.exceptions import PreconditionFailed
from django.conf import settings

from jobs.models import Job
from tests.support import queues_purge

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_job_message_carries_priority_and_is_persistent(api, worker_paused):
    job_id = api.post("/api/v1/jobs", {"kind": "demo.sleep", "priority": 7}, format="json").json()[
        "id"
    ]

    with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
        queue = next(q for q in settings.CELERY_TASK_QUEUES if q.name == "default")
        message = queue(conn.channel()).get(no_ack=True)

    assert message.headers["id"] == job_id
    assert message.headers["task"] == "jobs.kind.demo.sleep"
    assert message.properties["priority"] == 7
    assert message.properties["delivery_mode"] == 2
    assert Job.objects.get(id=job_id).status == "queued"


@pytest.mark.parametrize("name", ["default", "bulk", "notifications"])
def test_queues_are_durable_priority_queues_with_a_dead_letter_exchange(name):
    queues_purge()  # declares every queue as configured
    with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        same = next(q for q in settings.CELERY_TASK_QUEUES if q.name == name)
        assert same.queue_arguments == {
            "x-max-priority": 10,
            "x-dead-letter-exchange": "offload.dead",
        }
        same(channel).declare()  # same arguments: accepted
        other = kombu.Queue(name, durable=True)
        with pytest.raises(PreconditionFailed):
            other(conn.channel()).declare()  # the live queue has x-max-priority: refused
