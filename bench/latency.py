"""Latency of a tracked job: from submit to `running`, and from finish to the status being
readable through the API, on an idle system and at 50% of measured capacity.

- start: from just before `job_submit` is called to the job's `started_at` (stamped by the
  worker when it takes the job; a run that ends within a few milliseconds writes it with
  its final status);
- readable: from the job's `finished_at` (stamped by the worker) to the moment a client that
  long-polls `GET /api/v1/jobs/{id}?wait=N` receives the final status.
Idle: one `demo.sleep` job at a time. Loaded: first the capacity is measured (jobs/s end to
end with the submitter threads submitting one by one as fast as they can), then the same
threads submit at half that rate, paced, for `--seconds`; every job's start is measured and every
`--sample`-th job is followed through the API. Worker: 2 prefork processes; web: uvicorn
with 2 processes. Budget (idle start): p50 under 10 ms, p99 under 50 ms.

    python bench/latency.py [-n 300] [--seconds 20]
"""

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    ROOT,
    api_token,
    bench_env,
    database_prepare,
    django_setup,
    jobs_reset,
    results_write,
    sized,
    spread,
    wait_until,
    web_start,
    worker_start,
    worker_stop,
)

TERMINAL = {"succeeded", "failed", "dead", "cancelled"}
SUBMITTERS = 4


class Follower:
    """Long-polls a job through the API until it is final; records when that was seen."""

    def __init__(self, port: int, token: str) -> None:
        import httpx

        self._local = threading.local()
        self._base = f"http://127.0.0.1:{port}/api/v1/jobs"
        self._headers = {"Authorization": f"Token {token}"}
        self._httpx = httpx

    def _client(self):
        if not hasattr(self._local, "client"):
            self._local.client = self._httpx.Client(headers=self._headers, timeout=30)
        return self._local.client

    def follow(self, job_id: str) -> float:
        client, etag = self._client(), None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            headers = {"If-None-Match": etag} if etag else {}
            response = client.get(f"{self._base}/{job_id}", params={"wait": 10}, headers=headers)
            seen = time.time()
            if response.status_code == 200:
                if response.json()["status"] in TERMINAL:
                    return seen
                etag = response.headers.get("ETag")
            elif response.status_code != 304:
                raise RuntimeError(f"status read answered {response.status_code}")
        raise TimeoutError(f"job {job_id} not final through the API within 60 s")


def _submit(owner) -> tuple[str, float]:
    from jobs.services import JobSpec, job_submit

    submitted = time.time()
    job, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={}), owner=owner)
    return str(job.id), submitted


def _delays(submitted: dict[str, float], seen: dict[str, float]) -> dict[str, dict]:
    from jobs.models import Job

    rows = Job.objects.filter(id__in=list(submitted)).values_list(
        "id", "status", "started_at", "finished_at"
    )
    start, readable = [], []
    for job_id, status, started_at, finished_at in rows:
        if status != "succeeded":
            raise RuntimeError(f"job {job_id} ended {status}")
        start.append((started_at.timestamp() - submitted[str(job_id)]) * 1000)
        if str(job_id) in seen:
            readable.append((seen[str(job_id)] - finished_at.timestamp()) * 1000)
    return {"start_ms": spread(start), "readable_ms": spread(readable)}


def run_idle(n: int, owner, follower: Follower) -> dict:
    submitted, seen = {}, {}
    for _ in range(n):
        job_id, at = _submit(owner)
        submitted[job_id] = at
        seen[job_id] = follower.follow(job_id)
    return _delays(submitted, seen)


def capacity_measure(n: int, owner) -> float:
    """Jobs/s end to end when the same submitter threads submit one by one, unpaced."""
    from django.db import connection

    from jobs.models import Job

    def submitter(count: int) -> None:
        try:
            for _ in range(count):
                _submit(owner)
        finally:
            connection.close()

    started = time.monotonic()
    threads = [
        threading.Thread(target=submitter, args=(n // SUBMITTERS,)) for _ in range(SUBMITTERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = n // SUBMITTERS * SUBMITTERS
    done = wait_until(
        lambda: Job.objects.filter(status="succeeded").count() >= total, timeout=600, interval=0.05
    )
    return total / (done - started)


def run_loaded(rate: float, seconds: float, sample: int, owner, follower: Follower) -> dict:
    from django.db import connection

    from jobs.models import Job

    submitted: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=32)
    futures = {}
    interval = SUBMITTERS / rate
    began = time.monotonic()
    behind = [0]

    def submitter(index: int) -> None:
        due = began + index * interval / SUBMITTERS
        try:
            while due < began + seconds:
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    behind[0] += 1
                job_id, at = _submit(owner)
                with lock:
                    submitted[job_id] = at
                    if len(submitted) % sample == 0:
                        futures[job_id] = pool.submit(follower.follow, job_id)
                due += interval
        finally:
            connection.close()

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    achieved = len(submitted) / (time.monotonic() - began)
    for job_id, future in futures.items():
        seen[job_id] = future.result()
    pool.shutdown()
    ids = list(submitted)
    wait_until(
        lambda: Job.objects.filter(id__in=ids, status="succeeded").count() >= len(ids),
        timeout=600,
        interval=0.1,
    )
    return {
        "target_per_s": round(rate, 1),
        "achieved_per_s": round(achieved, 1),
        "late_submits": behind[0],
        **_delays(submitted, seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=sized(300, 100), help="idle jobs")
    parser.add_argument("--seconds", type=float, default=sized(20, 8), help="loaded phase")
    parser.add_argument("--capacity-jobs", type=int, default=sized(5000, 2000))
    parser.add_argument("--sample", type=int, default=10, help="follow every k-th loaded job")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    database_prepare()
    django_setup()
    from django.contrib.auth.models import User

    jobs_reset()
    token = api_token("bench-latency")
    owner = User.objects.get(username="bench-latency")
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        web, port = web_start(workers=2, log=logs / "web.log")
        worker = worker_start(
            "config", queues="default", concurrency=args.concurrency, env=bench_env(),
            log=logs / "worker.log",
        )  # fmt: skip
        try:
            follower = Follower(port, token)
            run_idle(min(20, args.n), owner, follower)  # warm-up: connections, imports
            idle = run_idle(args.n, owner, follower)
            jobs_reset()
            capacity = capacity_measure(args.capacity_jobs, owner)
            jobs_reset()
            loaded = run_loaded(capacity / 2, args.seconds, args.sample, owner, follower)
        finally:
            worker_stop(worker)
            worker_stop(web)
    jobs_reset()
    print(f"latency of demo.sleep jobs, {args.concurrency} worker processes, {os.cpu_count()} "
          f"cores; capacity {capacity:.0f} jobs/s, loaded at {loaded['target_per_s']:.0f}/s "
          f"(achieved {loaded['achieved_per_s']:.0f}/s)")  # fmt: skip
    print(f"{'phase':<8}{'delay':<30}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'n':>7}")
    labels = {"start_ms": "submit -> running (ms)", "readable_ms": "finish -> readable in API (ms)"}
    for phase, figures in (("idle", idle), ("loaded", loaded)):
        for key, label in labels.items():
            s = figures[key]
            print(f"{phase:<8}{label:<30}{s['p50']:>8.1f}{s['p95']:>8.1f}{s['p99']:>8.1f}"
                  f"{s['max']:>8.1f}{s['count']:>7}")  # fmt: skip
    budgets = {
        "idle_start_p50_under_10ms": idle["start_ms"]["p50"] < 10,
        "idle_start_p99_under_50ms": idle["start_ms"]["p99"] < 50,
    }
    for budget, met in budgets.items():
        print(f"budget {budget}: {'met' if met else 'MISSED'}")
    path = results_write(
        "latency",
        {"capacity_per_s": round(capacity, 1), "idle": idle, "loaded": loaded,
         "ratio_idle_start_p50_to_budget": round(idle["start_ms"]["p50"] / 10, 3),
         "ratio_idle_start_p99_to_budget": round(idle["start_ms"]["p99"] / 50, 3),
         "budgets": budgets},
    )  # fmt: skip
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
