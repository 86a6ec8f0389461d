"""A worker consuming the bulk queue reserves one message per process (others reserve more)
and, unless its command sets --concurrency, runs one process more than the CPUs."""

import socket

import pytest
from billiard import cpu_count
from django.conf import settings

from config.celery_app import app
from tests.support import Worker, process_env, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _stats(worker: Worker) -> dict:
    hostname = worker.name.replace("%h", socket.gethostname())

    def stats() -> dict | None:
        return app.control.inspect(destination=[hostname], timeout=1).stats()

    return wait_for(stats, timeout=30, what=f"stats of {hostname}")[hostname]


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
        stats = _stats(worker)
        assert stats["prefetch_count"] == 2 * per_process
        assert len(stats["pool"]["processes"]) == 2  # the command's -c is kept
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("queues", "env", "processes"),
    [
        ("bulk", {}, cpu_count() + 1),
        ("default,notifications", {}, cpu_count()),
        ("default,bulk", {"OFFLOAD_LONG_JOB_CONCURRENCY": "1"}, 1),
    ],
)
def test_workers_of_the_bulk_queue_run_a_process_more_than_the_cpus(
    log_dir, queues, env, processes
):
    """A tracked job waits on the database at its start and end: the extra process keeps
    the cores busy meanwhile. Without -c only; OFFLOAD_LONG_JOB_CONCURRENCY overrides."""
    queues_purge()
    worker = Worker(queues=queues, concurrency=None, log_dir=log_dir, env=process_env(**env))
    worker.start()
    try:
        stats = _stats(worker)
        assert len(stats["pool"]["processes"]) == processes
        assert len(worker.children()) == processes
        per_process = (
            settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER
            if "bulk" in queues
            else settings.CELERY_WORKER_PREFETCH_MULTIPLIER
        )
        assert stats["prefetch_count"] == processes * per_process
    finally:
        worker.stop()
