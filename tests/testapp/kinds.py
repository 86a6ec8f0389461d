"""Test-only kinds: short time limits and a non-idempotent crash, for the reliability tests."""

import os
import time

from celery.exceptions import SoftTimeLimitExceeded
from rest_framework import serializers

from jobs.registry import StrictBooleanField, job_kind
from jobs.runtime import JobRun


class LimitedParams(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=60)
    ignore_soft_limit = StrictBooleanField(default=False)


@job_kind("test.limited", params=LimitedParams, soft_time_limit=1, time_limit=2, max_deliveries=2)
def limited(job: JobRun) -> dict:
    """Sleeps; the soft limit is 1 s and the hard limit 2 s."""
    deadline = time.monotonic() + job.params["seconds"]
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            if not job.params["ignore_soft_limit"]:
                raise
    return {"slept": job.params["seconds"]}


class CrashParams(serializers.Serializer):
    pass


@job_kind("test.crash_once", params=CrashParams, idempotent=False)
def crash_once(job: JobRun) -> dict:
    """Not idempotent: acknowledged on receipt, so a crash cannot bring it back."""
    os._exit(1)


class EffectParams(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=5, default=0.02)


@job_kind("test.effect", params=EffectParams)
def effect(job: JobRun) -> dict:
    """Works a little, then applies its effect once: the ledger check and the insert share
    one transaction, so a redelivery after a crash finds the effect and does not repeat it."""
    from django.db import transaction

    from tests.testapp.models import Effect

    time.sleep(job.params["seconds"])
    with transaction.atomic():
        if not Effect.objects.select_for_update().filter(job_id=job.id).exists():
            Effect.objects.create(job_id=job.id, attempt=job.attempt, pid=os.getpid())
    return {"pid": os.getpid()}


if os.environ.get("OFFLOAD_TEST_REJECT_ON_WORKER_LOST") == "0":
    # The harness's control run: a lost worker's message is not requeued.
    effect.task.reject_on_worker_lost = False


class ExclusiveParams(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=10, default=0.3)


@job_kind("test.exclusive", params=ExclusiveParams, concurrency_key="owner", concurrency_limit=1)
def exclusive(job: JobRun) -> dict:
    """One at a time per owner."""
    time.sleep(job.params["seconds"])
    return {"ok": True}
