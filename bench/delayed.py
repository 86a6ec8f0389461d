"""Delayed jobs: how late after its `run_at` a delayed job starts, against the start
latency of the same job submitted for now (the anchor), same worker, beat and run.

A delayed job waits `scheduled` in the database and is released by the leading beat
(every OFFLOAD_DISPATCH_INTERVAL = 0.5 s); the promise is "within a second of its time".
Both series are submitted one by one on an otherwise idle system.

    python bench/delayed.py [-n 100]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    BIN,
    ROOT,
    bench_env,
    database_prepare,
    django_setup,
    jobs_reset,
    results_write,
    sized,
    wait_until,
    worker_start,
    worker_stop,
)


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
    }


def _wait_all(ids: list, timeout: float) -> None:
    from jobs.models import Job

    wait_until(
        lambda: Job.objects.filter(id__in=ids, status="succeeded").count() == len(ids),
        timeout=timeout,
        interval=0.1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=sized(100, 20), help="jobs per series")
    args = parser.parse_args()

    database_prepare()
    django_setup()
    from django.utils import timezone

    from jobs.models import Job
    from jobs.services import JobSpec, job_submit

    jobs_reset()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        worker = worker_start(
            "config", queues="default", concurrency=2, env=bench_env(), log=logs / "worker.log"
        )
        beat_log = open(logs / "beat.log", "wb")  # noqa: SIM115
        beat = subprocess.Popen(
            [str(BIN / "celery"), "-A", "config", "beat", "-l", "info"],
            cwd=ROOT, env=bench_env(LOG_LEVEL="INFO"), stdout=beat_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: b"is the leader now" in (logs / "beat.log").read_bytes(), timeout=60)
            spec = JobSpec(kind="demo.sleep", params={})
            now_ids = []
            for _ in range(args.n):
                job, _ = job_submit(spec=spec, owner=None)
                now_ids.append(job.id)
                time.sleep(0.05)
            _wait_all(now_ids, 120)
            delayed_ids = []
            for i in range(args.n):
                # Spread the due times over the dispatcher's cycle.
                due = JobSpec(kind="demo.sleep", params={}, countdown=2 + (i % 10) * 0.137)
                job, _ = job_submit(spec=due, owner=None)
                delayed_ids.append(job.id)
                time.sleep(0.05)
            _wait_all(delayed_ids, 120)
        finally:
            beat.terminate()
            beat.wait(timeout=30)
            worker_stop(worker)
    immediate = [
        (j.started_at - j.created_at).total_seconds() for j in Job.objects.filter(id__in=now_ids)
    ]
    late = [
        (j.started_at - j.run_at).total_seconds() for j in Job.objects.filter(id__in=delayed_ids)
    ]
    early = sum(1 for value in late if value < 0)
    results = {
        "n": args.n,
        "immediate_start": _percentiles(immediate),
        "delayed_start_after_run_at": _percentiles(late),
        "started_early": early,
        "measured_at": timezone.now().isoformat(),
    }
    anchor, delayed = results["immediate_start"], results["delayed_start_after_run_at"]
    results["ratio_p50"] = round(delayed["p50_ms"] / max(anchor["p50_ms"], 0.1), 2)
    print(f"delayed jobs, n={args.n}, 2 worker processes, one beat, {os.cpu_count()} cores")
    print(f"{'series':<28}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name in ("immediate_start", "delayed_start_after_run_at"):
        fig = results[name]
        print(f"{name:<28}{fig['p50_ms']:>10}{fig['p99_ms']:>10}{fig['max_ms']:>10}")
    print(f"ratio of p50s (delayed / immediate): {results['ratio_p50']}; started early: {early}")
    met = delayed["p99_ms"] < 1000 and early == 0
    print(f"budget: delayed jobs start within 1 s of run_at (p99), never early: "
          f"{'met' if met else 'MISSED'}")  # fmt: skip
    path = results_write("delayed", results)
    print(f"written {path}")


if __name__ == "__main__":
    main()
