"""The fault-injection harness: submit jobs that record their effect, hurt the system while
they run, then classify every submitted id as ok, lost or duplicated-effect.

Sizes come from the environment so `make chaos` can run the same scenarios larger:
OFFLOAD_CHAOS_JOBS (default 2000).
"""

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Count

from jobs.models import Job
from jobs.services import JobSpec, jobs_bulk_submit
from tests.testapp.models import Effect

FINAL = ("succeeded", "failed", "dead", "cancelled")


def chaos_jobs() -> int:
    return int(os.environ.get("OFFLOAD_CHAOS_JOBS", "2000"))


@dataclass
class Outcome:
    submitted: int
    ok: int
    lost: int
    duplicated: int
    kills: int = 0
    restarts: int = 0
    seconds: float = 0.0
    slowest_seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def table(self, name: str) -> str:
        return (
            f"{name}: submitted={self.submitted} ok={self.ok} lost={self.lost} "
            f"duplicated={self.duplicated} kills={self.kills} restarts={self.restarts} "
            f"seconds={self.seconds:.1f} slowest_job_s={self.slowest_seconds:.1f} "
            f"statuses={self.statuses}"
        )


def jobs_submit(count: int, *, seconds: float = 0.02) -> list[str]:
    ids: list[str] = []
    for offset in range(0, count, 500):
        specs = [
            JobSpec(
                kind="test.effect", params={"seconds": round(random.uniform(0, seconds * 2), 3)}
            )
            for _ in range(min(500, count - offset))
        ]
        ids += [str(job.id) for job in jobs_bulk_submit(specs=specs, owner=None)]
    return ids


def all_final(ids: list[str]) -> bool:
    return not Job.objects.filter(id__in=ids).exclude(status__in=FINAL).exists()


def classify(ids: list[str], *, started: float) -> Outcome:
    effects = dict(
        Effect.objects.filter(job_id__in=ids)
        .values_list("job_id")
        .annotate(n=Count("id"))
        .values_list("job_id", "n")
    )
    jobs = {str(job_id): (status, created, finished)
            for job_id, status, created, finished in Job.objects.filter(id__in=ids)
            .values_list("id", "status", "created_at", "finished_at")}  # fmt: skip
    ok = lost = duplicated = 0
    slowest = 0.0
    for job_id in ids:
        status, created, finished = jobs.get(job_id, ("missing", None, None))
        count = effects.get(__import__("uuid").UUID(job_id), 0)
        if count > 1:
            duplicated += 1
        elif status != "succeeded" or count == 0:
            lost += 1
        else:
            ok += 1
        if created and finished:
            slowest = max(slowest, (finished - created).total_seconds())
    statuses = Counter(status for status, _, _ in jobs.values())
    return Outcome(
        submitted=len(ids),
        ok=ok,
        lost=lost,
        duplicated=duplicated,
        seconds=time.monotonic() - started,
        slowest_seconds=slowest,
        statuses=dict(statuses),
    )


class Repeater:
    """Calls `hurt()` every `interval` seconds in a thread until stopped."""

    def __init__(self, interval: float, hurt: Callable[[], bool]) -> None:
        self.interval = interval
        self.hurt = hurt
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.hurt():
                self.count += 1

    def __enter__(self) -> "Repeater":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def child_killer(worker) -> Callable[[], bool]:
    def kill() -> bool:
        children = worker.children()
        if not children:
            return False
        try:
            os.kill(random.choice(children), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    return kill
