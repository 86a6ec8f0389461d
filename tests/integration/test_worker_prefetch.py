"""A worker consuming the bulk queue reserves one message per process; others reserve more."""

import socket

import pytest
from django.conf import settings

from config.celery_app import app
from tests.support import Worker, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _prefetch_count(worker: Worker) -> int:
    hostname = worker.name.replace("%h", socket.gethostname())

    def stats() -> dict | None:
        return app.control.inspect(destination=[hostname], timeout=1).stats()

    return wait_for(stats, timeout=30, what=f"stats of {hostname}")[hostname]["prefetch_count"]


@pytest.mark.parametrize(
    ("queues", "per_process"),
    [
        ("bulk", settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER),
        ("default,bulk,notifications", settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER),
        ("default,notifications", settings.CELERY_WORKER_PREFETCH_MULTIPLIER),
    ],
)
def test_workers_of_the_bulk_queue_reserve_one_message_per_process(log_dir, queues, per_process):
    assert (
        settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER != settings.CELERY_WORKER_PREFETCH_MULTIPLIER
    )
    queues_purge()
    worker = Worker(queues=queues, concurrency=2, log_dir=log_dir).start()
    try:
        assert _prefetch_count(worker) == 2 * per_process
    finally:
        worker.stop()
