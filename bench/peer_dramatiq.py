"""Peer for bench/throughput.py: the same no-op task on Dramatiq, on the same RabbitMQ.

Dramatiq's defaults: late acknowledgement, its default middleware (retries, time limit, age
limit, callbacks), no result backend. Publisher confirms are switched on, as Celery and
Offload use them, so every system reports a job queued only once the broker has it.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = "bench_dramatiq"


def _pika_url(url: str) -> str:
    # kombu spells the default vhost `//`; pika wants it escaped.
    parts = urlsplit(url)
    path = "/%2F" if parts.path in ("", "/", "//") else parts.path
    return urlunsplit(parts._replace(path=path))


broker = RabbitmqBroker(
    url=_pika_url(os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1//")),
    confirm_delivery=True,
)
dramatiq.set_broker(broker)
_counter: int | None = None


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    global _counter
    if _counter is None:
        _counter = os.open(os.environ["BARE_COUNTER_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_counter, b"x")
