"""The dead-letter exchange and queue on RabbitMQ.

Every job queue names `offload.dead` as its dead-letter exchange: a late-ack message whose
job failed or died, or a poison message, is rejected and lands in the `offload.dead` queue
with RabbitMQ's `x-death` header saying where it came from. The job record (status `dead`,
its error) is the source of truth; the queue keeps the raw messages for inspection, capped
at OFFLOAD_DEAD_LETTER_MAX (oldest dropped first).
"""

from typing import Any

import kombu
from django.conf import settings


def dead_letter_queue() -> kombu.Queue:
    exchange = kombu.Exchange(settings.OFFLOAD_DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    return kombu.Queue(
        settings.OFFLOAD_DEAD_LETTER_EXCHANGE,
        exchange,
        durable=True,
        queue_arguments={
            "x-max-length": settings.OFFLOAD_DEAD_LETTER_MAX,
            "x-overflow": "drop-head",
        },
    )


def dead_letter_declare(channel: Any) -> None:
    dead_letter_queue()(channel).declare()


def dead_letters_peek(*, limit: int = 100) -> list[dict[str, Any]]:
    """Read (and put back) up to `limit` dead-lettered messages: task id, task name, origin."""
    with kombu.Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        queue = dead_letter_queue()(channel)
        queue.declare()
        seen, messages = [], []
        for _ in range(limit):
            message = queue.get(no_ack=False)
            if message is None:
                break
            seen.append(message)
            death = (message.headers.get("x-death") or [{}])[0]
            messages.append(
                {
                    "job_id": message.headers.get("id"),
                    "task": message.headers.get("task"),
                    "queue": death.get("queue"),
                    "reason": death.get("reason"),
                    "count": death.get("count"),
                }
            )
        for message in seen:
            message.requeue()
        return messages
