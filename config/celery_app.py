"""The Celery application: configuration comes from Django settings (CELERY_ namespace)."""

import os
from typing import Any

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("offload")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class LongJobWorker(bootsteps.Step):
    """A worker that consumes a long-job queue (`bulk`) reserves one message per process, and
    runs one process more than the CPUs unless its command sets `--concurrency`.

    Prefetch: Celery's is per worker, not per queue: a message reserved behind a job that
    runs for minutes waits for it even while other workers are idle. So any worker consuming
    one of OFFLOAD_LONG_JOB_QUEUES uses OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER (default 1); the
    others keep CELERY_WORKER_PREFETCH_MULTIPLIER.

    Processes: a tracked job waits on the database when it starts (its claim) and when it
    ends (its final write with its outputs' rows), and its CPU sits idle meanwhile unless
    another process is ready to run. Under thumbnails on 2 cores, Celery's default of one
    process per CPU left about 5% of the machine idle, one more about 1% (bench/thumbnails.py).
    OFFLOAD_LONG_JOB_CONCURRENCY sets the count instead; `--concurrency`, `--autoscale` and
    CELERY_WORKER_CONCURRENCY are left as given.

    This step's constructor runs after `-Q` is applied and before the Consumer step reads
    the multiplier and the pool is made.
    """

    name = "offload.long_job_worker"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        from django.conf import settings

        consumed = set(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        if consumed & set(settings.OFFLOAD_LONG_JOB_QUEUES):
            parent.prefetch_multiplier = settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER
            # `concurrency` is the command's --concurrency, or else CELERY_WORKER_CONCURRENCY;
            # without either, Celery has set one process per CPU.
            if not kwargs.get("concurrency") and not kwargs.get("autoscale"):
                processes = settings.OFFLOAD_LONG_JOB_CONCURRENCY or parent.concurrency + 1
                # The Pool step copies `concurrency` when it is made; set both whichever of
                # the two steps is made first.
                parent.concurrency = parent.min_concurrency = processes
        super().__init__(parent, **kwargs)


app.steps["worker"].add(LongJobWorker)
