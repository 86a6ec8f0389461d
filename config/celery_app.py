"""The Celery application: configuration comes from Django settings (CELERY_ namespace)."""

import os
from typing import Any

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("offload")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class LongJobPrefetch(bootsteps.Step):
    """A worker that consumes a long-job queue (`bulk`) reserves one message per process.

    Celery's prefetch is per worker, not per queue: a message reserved behind a job that runs
    for minutes waits for it even while other workers are idle. So any worker consuming one of
    OFFLOAD_LONG_JOB_QUEUES uses OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER (default 1); the others
    keep CELERY_WORKER_PREFETCH_MULTIPLIER. This step's constructor runs after `-Q` is applied
    and before the Consumer step reads the multiplier.
    """

    name = "offload.long_job_prefetch"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        from django.conf import settings

        consumed = set(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        if consumed & set(settings.OFFLOAD_LONG_JOB_QUEUES):
            parent.prefetch_multiplier = settings.OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER
        super().__init__(parent, **kwargs)


app.steps["worker"].add(LongJobPrefetch)
