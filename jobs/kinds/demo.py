"""`demo.sleep`: a tiny kind for smoke tests, examples and benchmarks.

Sleeps `seconds` in `steps` progress steps, then returns. `fail` makes it fail on purpose:
`error` fails at once (not retried), `transient` raises a retryable error on the first
`fail_attempts` attempts and succeeds after, `crash` kills its own worker process every
time (a poison message).
"""

import os
import time

from rest_framework import serializers

from jobs.registry import RetryPolicy, job_kind
from jobs.runtime import JobRun


class DemoTransientError(Exception):
    """Stands for a network blip: retried with backoff."""


class DemoError(Exception):
    """Stands for bad input: fails the job at once."""


class SleepParams(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=3600, default=0)
    steps = serializers.IntegerField(min_value=1, max_value=10_000, default=10)
    fail = serializers.ChoiceField(
        choices=["", "error", "transient", "crash"], default="", allow_blank=True
    )
    fail_attempts = serializers.IntegerField(min_value=0, max_value=100, default=1)
    message = serializers.CharField(max_length=200, default="", allow_blank=True)


@job_kind(
    "demo.sleep",
    params=SleepParams,
    retry=RetryPolicy(on=(DemoTransientError,), max_attempts=3, backoff=0.5, backoff_max=5),
    soft_time_limit=3600 + 30,
    time_limit=3600 + 60,
)
def demo_sleep(job: JobRun) -> dict:
    """Sleep a while in steps, reporting progress; optionally fail on purpose."""
    params = job.params
    if params["fail"] == "error":
        raise DemoError(params["message"] or "demo.sleep failed on purpose (fail=error)")
    if params["fail"] == "crash":
        os._exit(1)
    if params["fail"] == "transient" and job.attempt <= params["fail_attempts"]:
        raise DemoTransientError(f"transient failure on attempt {job.attempt}")
    seconds, steps = params["seconds"], params["steps"]
    if seconds:
        for step in range(1, steps + 1):
            time.sleep(seconds / steps)
            job.progress(step, steps, f"step {step} of {steps}")
    return {"slept": seconds, "attempt": job.attempt, "message": params["message"]}
