"""Celery signal handlers: the worker side of the lifecycle.

prerun claims the job (a read: is it still waiting to run? its params, attempt and version),
success/failure/retry write the outcome through the run's fenced writes, revoked records a
cancellation. Kind code never writes a status. A refused write (late, duplicate, cancelled
meanwhile) is a no-op.

A first delivery does not write before the task body runs: a run that ends within
OFFLOAD_RUNNING_MARK_AFTER writes once, at the end; a longer one is marked running by the
keeper thread. A redelivered message is marked (and its delivery counted) before the body.
"""

import logging
import socket
import time
from datetime import timedelta
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import connections
from django.utils import timezone

from jobs import lifecycle, logs, metrics, runtime
from jobs.dbretry import db_retry
from jobs.errors import JobCancelled
from jobs.models import JobStatus
from jobs.registry import Kind, kind_for_task

logger = logging.getLogger(__name__)
_hostname = socket.gethostname()


def _error(exc: BaseException, *, kind: Kind, attempts: int | None, retryable: bool) -> dict:
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        limit = kind.soft_time_limit if isinstance(exc, SoftTimeLimitExceeded) else kind.time_limit
        return {
            "type": "TimeLimitExceeded",
            "message": f"The job ran longer than its time limit of {limit:g} s.",
            "retryable": False,
            "attempts": attempts,
        }
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000] or type(exc).__name__,
        "retryable": retryable,
        "attempts": attempts,
    }


def _connections_check() -> None:
    # After a database error (a restart, a dropped connection) start the next task on a
    # fresh connection; otherwise keep the connection (no per-task health-check query).
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()


@signals.task_prerun.connect
def on_prerun(sender: Any = None, task_id: str = "", args: tuple = (), **_: Any) -> None:
    kind = kind_for_task(getattr(sender, "name", ""))
    if kind is None:
        return
    runtime.run_begin(None)
    logs.log_context_set(job_id=str(args[0]), kind=kind.name)
    _connections_check()
    request = sender.request
    retries = getattr(request, "retries", 0) or 0
    claim = db_retry(lifecycle.job_claim, job_id=args[0], kind=kind.name)
    if claim is not None and not _previous_attempt_written(claim, retries):
        written = claim["claimed"]  # a claim write happens once: its result is kept
        claim = _claim_after_previous_attempt(args[0], kind.name, retries)
        if claim is not None:
            claim["claimed"] = {**written, **claim["claimed"]}
    if claim is None:
        logger.info("job %s not run: it is no longer waiting to run", args[0])
        return
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    delivery = claim["deliveries"] + 1
    if redelivered:
        # A first delivery is counted when it is written; if it died before that, this
        # redelivery is at least the second.
        delivery = max(delivery, 2)
        if claim["deliveries"] >= kind.max_deliveries:
            _poison_bury(kind, claim)
            return
    # A retry's message is for the attempt after its `retries` earlier ones.
    attempt = max(claim["attempts"], retries) + 1
    logs.log_context_set(attempt=attempt)
    run = runtime.JobRun(
        id=claim["id"],
        kind=kind.name,
        params=claim["params"],
        attempt=attempt,
        version=claim["version"],
        delivery=delivery,
        worker=getattr(request, "hostname", None) or _hostname,
        schedule_run=(claim.get("idempotency_key") or "").startswith("schedule:"),
        claimed=claim["claimed"],
    )
    if redelivered or settings.OFFLOAD_RUNNING_MARK_AFTER <= 0:
        if not run.mark():
            logger.info("job %s not run: it moved while being claimed", run.id)
            return
    else:
        runtime.run_watch(run)
    if run.attempt == 1 and claim.get("created_at"):
        metrics.queue_wait_observe(
            kind=kind.name, created=claim["created_at"], started=run.started_at
        )
    runtime.run_begin(run)


RETRY_CATCH_UP = 2.0  # seconds a retry's run waits for its previous attempt's write


def _previous_attempt_written(claim: dict, retries: int) -> bool:
    """Whether the attempts before a message's run have written their outcome. A retry's
    message (`retries` earlier attempts) is for attempt retries + 1; attempt `retries` is
    over once it has written `retrying`. Until then the job shows fewer attempts (the
    previous run was never marked) or that very attempt still `running` (it was marked,
    by a progress call or the keeper). More attempts than `retries`: this message's own
    run was marked before (a redelivery)."""
    attempts = claim["attempts"]
    return attempts > retries or (attempts == retries and claim["status"] != JobStatus.RUNNING)


def _claim_after_previous_attempt(job_id: Any, kind: str, retries: int) -> dict | None:
    """Celery publishes a retry's message before the `task_retry` signal in which the
    previous attempt writes `retrying`, so a message with a near-zero (jittered) countdown
    can be claimed before that write lands, by another process or, in a thread pool, by
    another thread. Claimed then, the run would repeat the previous attempt's number, or
    hold a version that the `retrying` write is about to replace, and its fenced writes
    would be refused, leaving the job `retrying` with no message. Wait for the write, which
    is milliseconds away; if the previous attempt died before making it, go on after
    RETRY_CATCH_UP seconds (the attempt number then follows the message)."""
    deadline = time.monotonic() + RETRY_CATCH_UP
    while True:
        time.sleep(0.005)
        claim = db_retry(lifecycle.job_claim, job_id=job_id, kind=kind, writes=False)
        if (
            claim is None
            or _previous_attempt_written(claim, retries)
            or time.monotonic() > deadline
        ):
            return claim


def _poison_bury(kind: Kind, claim: dict) -> None:
    """The message keeps coming back without its run ever finishing (the task kills its
    worker, or a hard time limit): the job is dead and the message is dead-lettered."""
    now = timezone.now()
    db_retry(
        lifecycle.job_run_write,
        job_id=claim["id"],
        version=claim["version"],
        to=JobStatus.DEAD,
        sets={
            "error": {
                "type": "PoisonMessage",
                "message": (
                    f"Delivered {claim['deliveries'] + 1} times without finishing "
                    f"(the limit for {kind.name} is {kind.max_deliveries}): its worker died "
                    "or was killed each time."
                ),
                "retryable": False,
                "attempts": claim["attempts"],
            },
            "finished_at": now,
        },
    )
    logger.error(
        "job %s is dead: poison message after %d deliveries", claim["id"], claim["deliveries"]
    )
    runtime.run_reject()


@signals.task_postrun.connect
def on_postrun(sender: Any = None, **_: Any) -> None:
    if kind_for_task(getattr(sender, "name", "")) is not None:
        runtime.run_end()
        logs.log_context_clear()


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    run = runtime.current_run()
    if run is None or kind_for_task(getattr(sender, "name", "")) is None:
        return
    now = timezone.now()
    run.finish(
        JobStatus.SUCCEEDED,
        {
            "result": result,
            "error": None,
            "finished_at": now,
            "heartbeat_at": now,
            "progress_percent": 100.0,
        },
    )


@signals.task_failure.connect
def on_failure(
    sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_: Any
) -> None:
    kind = kind_for_task(getattr(sender, "name", ""))
    if kind is None or exception is None or isinstance(exception, JobCancelled | Reject):
        return  # a cancelled run, or a message rejected after its job was already written
    run = runtime.current_run()
    transient = kind.retry.is_transient(exception) or isinstance(exception, WorkerLostError)
    # A transient error that still fails the task has used up its attempts.
    status = JobStatus.DEAD if transient else JobStatus.FAILED
    now = timezone.now()
    attempts = run.attempt if run else None
    sets = {
        "error": _error(exception, kind=kind, attempts=attempts, retryable=transient),
        "finished_at": now,
        "heartbeat_at": now,
    }
    if run is not None:
        run.finish(status, sets)
    else:
        # Sent by the worker's main process for a child it lost (hard time limit, crash):
        # there is no run object here, so this is an ordinary unfenced move.
        db_retry(lifecycle.job_move, job_id=task_id, to=status, sets=sets)


@signals.task_retry.connect
def on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    kind = kind_for_task(getattr(sender, "name", ""))
    run = runtime.current_run()
    if kind is None or run is None:
        return
    exc = getattr(reason, "exc", None) or reason
    when = getattr(reason, "when", None)
    next_at = None
    if isinstance(when, int | float):
        next_at = timezone.now() + timedelta(seconds=when)
    elif when is not None:
        next_at = when
    run.finish(
        JobStatus.RETRYING,
        {
            "error": _error(exc, kind=kind, attempts=run.attempt, retryable=True),
            "next_attempt_at": next_at,
        },
    )


@signals.worker_ready.connect
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    if settings.BROKER_IS_AMQP:
        from jobs import deadletters

        with sender.app.connection_for_write() as conn:
            deadletters.dead_letter_declare(conn.default_channel)
    from jobs import concurrency

    released = concurrency.slots_sweep()
    if released:
        logger.info("released %d held job(s) whose slots had freed", released)


@signals.task_revoked.connect
def on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    if kind_for_task(getattr(sender, "name", "") or getattr(request, "task", "")) is None:
        return
    job_id = getattr(request, "id", None)
    if job_id:
        sets: dict[str, Any] = {"finished_at": timezone.now()}
        if expired:
            # A schedule's run whose message outlived its slot's grace (a worker backlog):
            # cancelled unrun, so a backlog never runs one periodic job many times.
            sets["error"] = {
                "type": "Expired",
                "message": "Not run: no worker started it before its message expired.",
                "retryable": False,
                "attempts": 0,
            }
        lifecycle.job_move(job_id=job_id, to=JobStatus.CANCELLED, sets=sets)
