"""What a running task sees: the current `JobRun`, the progress helper and the task base.

Status changes are written by the Celery signal handlers in `jobs.worker` through the run
object here, which carries the run's fencing token (the job version it holds). A run that
finishes within `OFFLOAD_RUNNING_MARK_AFTER` seconds writes once, at the end; a longer one is
marked `running` by a keeper thread (which also renews its heartbeat), or by its first
progress call, whichever comes first.
"""

import contextvars
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from jobs import lifecycle, metrics
from jobs.dbretry import DB_ERRORS, db_retry
from jobs.errors import JobCancelled
from jobs.models import JobStatus
from jobs.registry import kind_for_task
from jobs.timers import Timers

logger = logging.getLogger(__name__)
_current: contextvars.ContextVar["JobRun | None"] = contextvars.ContextVar(
    "offload_job_run", default=None
)
_reject: contextvars.ContextVar[bool] = contextvars.ContextVar("offload_reject", default=False)


@dataclass(eq=False)
class JobRun:
    """One attempt of one job, as its kind's function sees it."""

    id: uuid.UUID
    kind: str
    params: dict[str, Any]
    attempt: int
    version: int = 0
    delivery: int = 1
    worker: str = ""
    # A schedule's run holds its schedule's lease; its mark and heartbeats renew it.
    schedule_run: bool = False
    # What the kind's claim read returned besides the job (lifecycle.claim_returning_add).
    claimed: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=timezone.now)
    marked: bool = False
    finished: bool = False
    _with_finish: list[tuple[str, list[Any]]] = field(default_factory=list, repr=False)
    _last_write: float = field(default=0.0, repr=False)
    _last_beat: float = field(default_factory=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _start_sets(self) -> dict[str, Any]:
        return {
            "started_at": lifecycle.Coalesce(self.started_at),
            "heartbeat_at": timezone.now(),
            "worker": self.worker[:255],
            "attempts": self.attempt,
            "deliveries": self.delivery,
            "next_attempt_at": None,
        }

    def _write(self, to: str, sets: dict[str, Any], **kwargs: Any) -> bool:
        row = db_retry(
            lifecycle.job_run_write,
            job_id=self.id,
            version=self.version,
            to=to,
            sets=sets,
            **kwargs,
        )
        if row is None:
            return False
        self.version = row["version"]
        return True

    def mark(self, extra: dict[str, Any] | None = None) -> bool:
        """Write the running move now (if not yet). False when the job was cancelled or
        otherwise moved by someone else since the run claimed it."""
        with self._lock:
            if self.finished:
                return False
            if self.marked:
                return True
            self.marked = self._write(JobStatus.RUNNING, {**self._start_sets(), **(extra or {})})
            if self.marked:
                self._lease_renew()
            return self.marked

    def heartbeat(self) -> None:
        with self._lock:
            if self.marked and not self.finished:
                self._last_beat = time.monotonic()
                self._write(
                    JobStatus.RUNNING,
                    {"heartbeat_at": timezone.now()},
                    where_status=[JobStatus.RUNNING],
                    bump=False,
                )
                self._lease_renew()

    def _lease_renew(self) -> None:
        if self.schedule_run:
            from jobs.schedules import leases

            if not db_retry(leases.lease_renew, job_id=self.id):
                logger.warning("job %s: its schedule lease was taken over", self.id)

    def lease_held(self) -> bool:
        """For a schedule's run: whether it still holds its schedule's lease (a newer run
        has not taken over). A run checks it before a write it must not make after a
        takeover; other jobs always get True."""
        if not self.schedule_run:
            return True
        from jobs.schedules import leases

        return db_retry(leases.lease_fence, job_id=self.id)

    def with_finish(self, sql: str, params: list[Any]) -> None:
        """Have `sql` (the kind's own bookkeeping) sent in the same query and transaction as
        the run's final write: one round trip and one commit instead of two. It runs whatever
        the outcome, even when the job's write is refused; where several statements cannot
        share a query, and for a run that ends without a final write, it runs on its own."""
        if not lifecycle.multi_statement_ok():
            _execute(sql, params)
            return
        with self._lock:
            if not self.finished:
                self._with_finish.append((sql, params))
                return
        _execute(sql, params)

    def with_finish_flush(self) -> None:
        """Run what is still waiting for a final write that did not come (the run ended
        without one: cancelled, or ignored)."""
        with self._lock:
            waiting, self._with_finish = self._with_finish, []
        for sql, params in waiting:
            db_retry(_execute, sql, params)

    def finish(self, to: str, sets: dict[str, Any]) -> bool:
        """The run's terminal (or retrying) write, folding in the running move if the run
        was never marked."""
        with self._lock:
            if self.finished:
                return False
            self.finished = True
            start = {} if self.marked else self._start_sets()
            before, self._with_finish = self._with_finish, []
            try:
                written = self._write(to, {**start, **sets}, before=before)
            except BaseException:
                self._with_finish = before  # run_end() tries them again on their own
                raise
        if written:
            metrics.run_observe(
                kind=self.kind, status=to, started=self.started_at, finished=timezone.now()
            )
        return written

    def progress(self, current: int, total: int | None = None, message: str = "") -> None:
        """Record progress; writes at most every OFFLOAD_PROGRESS_INTERVAL seconds (and
        always the last step). Raises JobCancelled when the job was cancelled meanwhile."""
        now = time.monotonic()
        last_step = total is not None and current >= total
        if not last_step and now - self._last_write < settings.OFFLOAD_PROGRESS_INTERVAL:
            return
        self._last_write = now
        sets = lifecycle.progress_sets(current=current, total=total, message=message)
        if not self.marked:
            if self.mark(sets):
                return
            raise JobCancelled(f"job {self.id} was cancelled")
        with self._lock:
            moved = not self.finished and self._write(
                JobStatus.RUNNING, sets, where_status=[JobStatus.RUNNING]
            )
        if not moved:
            raise JobCancelled(f"job {self.id} was cancelled")


TICK = 0.005  # seconds a keeper wake-up may come after a run's due time

# Marks runs that outlive the mark delay as running and renews the heartbeat of long runs.
# Every run waits the same delay, so a new one is almost never the next due: the thread is
# woken only when it is (no thread switch per job), and the runs due within a tick of each
# other (most of them long finished) are handled in one wake-up.
_keeper = Timers("offload-keeper", slack=TICK)


def run_watch(run: JobRun) -> None:
    _keeper.call_later(settings.OFFLOAD_RUNNING_MARK_AFTER, lambda: _run_keep(run))


def _run_keep(run: JobRun) -> None:
    if run.finished:
        return
    try:
        if run.marked:
            run.heartbeat()
        else:
            run.mark()
    except DatabaseError as exc:
        logger.warning("job %s: running mark or heartbeat not written: %s", run.id, exc)
    if not run.finished:
        _keeper.call_later(settings.OFFLOAD_HEARTBEAT_INTERVAL, lambda: _run_keep(run))


def current_run() -> JobRun | None:
    return _current.get()


def run_begin(run: JobRun | None) -> None:
    _current.set(run)


def _execute(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def run_end() -> None:
    run = _current.get()
    if run is not None:
        run.finished = True
        run.with_finish_flush()
    _current.set(None)
    _reject.set(False)


def run_reject() -> None:
    """The task's message is to be rejected without requeue (dead-lettered), unrun."""
    _reject.set(True)


def report_progress(current: int, total: int | None = None, message: str = "") -> None:
    """Progress helper for kind code that does not hold its `JobRun`."""
    run = _current.get()
    if run is None:
        raise RuntimeError("report_progress() called outside a running job")
    run.progress(current, total, message)


DB_RETRY_ATTEMPTS = 5


class JobTask(Task):
    """Base of every kind's task. The task takes the job id only."""

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        # The prerun handler found the job not waiting to run (cancelled, finished, or its
        # row is gone): the body must not run, and no status is written.
        if _reject.get():
            raise Reject("poison message", requeue=False)
        if _current.get() is None:
            raise Ignore()

    def run_kind(self, job_id: str) -> Any:
        kind = kind_for_task(self.name)
        run = _current.get()
        try:
            return kind.func(run)
        except JobCancelled:
            # Cancelled while running: the status is already written; stop quietly.
            raise Ignore() from None
        except kind.retry.on as exc:
            if run.attempt >= kind.retry.max_attempts:
                raise
            raise self.retry(exc=exc, countdown=kind.retry.delay(run.attempt)) from exc
        except DB_ERRORS as exc:
            # The database went away under the kind's own queries: that can succeed later.
            if run.attempt >= max(kind.retry.max_attempts, DB_RETRY_ATTEMPTS):
                raise
            raise self.retry(exc=exc, countdown=min(2.0 * run.attempt, 30.0)) from exc
