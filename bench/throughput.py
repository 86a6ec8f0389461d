"""No-op jobs end to end: bare Celery (the anchor) against Offload's tracked jobs.

Same broker, same worker count, pool and prefetch for every system. For each system the
clock starts at the first publish and stops when the last job has finished; the publish
rate is taken from the same run (the worker consumes while the loop publishes).

    python bench/throughput.py [-n 20000] [--concurrency 2]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import (
    BROKER_URL,
    bench_env,
    database_prepare,
    django_setup,
    jobs_reset,
    results_write,
    wait_until,
    worker_start,
    worker_stop,
)

BULK_CHUNK = 500


def run_bare(n: int, concurrency: int, logs: Path) -> dict:
    import bare_celery

    counter = logs / "bare.counter"
    counter.write_bytes(b"")
    env = bench_env(BARE_COUNTER_FILE=str(counter), PYTHONPATH=str(Path(__file__).parent))
    with bare_celery.app.connection_for_write() as conn:
        bare_celery.app.amqp.queues["celery"](conn.default_channel).declare()
        conn.default_channel.queue_purge("celery")
    worker = worker_start("bare_celery", queues="celery", concurrency=concurrency, env=env,
                          log=logs / "bare-worker.log")  # fmt: skip
    try:
        started = time.monotonic()
        for _ in range(n):
            bare_celery.noop.apply_async()
        published = time.monotonic()
        done = wait_until(lambda: counter.stat().st_size >= n, timeout=600)
    finally:
        worker_stop(worker)
    return _figures(n, started, published, done)


def run_offload(n: int, concurrency: int, logs: Path, *, bulk: bool) -> dict:
    from jobs.models import Job
    from jobs.services import JobSpec, job_submit, jobs_bulk_submit

    jobs_reset()
    log = logs / f"offload-worker-{'bulk' if bulk else 'single'}.log"
    worker = worker_start(
        "config", queues="default", concurrency=concurrency, env=bench_env(), log=log
    )
    try:
        spec = JobSpec(kind="demo.sleep", params={})
        started = time.monotonic()
        if bulk:
            for offset in range(0, n, BULK_CHUNK):
                jobs_bulk_submit(specs=[spec] * min(BULK_CHUNK, n - offset), owner=None)
        else:
            for _ in range(n):
                job_submit(spec=spec, owner=None)
        published = time.monotonic()
        done = wait_until(
            lambda: Job.objects.filter(status="succeeded").count() >= n, timeout=1200, interval=0.1
        )
        not_ok = Job.objects.exclude(status="succeeded").count()
    finally:
        worker_stop(worker)
    if not_ok:
        raise RuntimeError(f"{not_ok} Offload jobs did not succeed")
    return _figures(n, started, published, done)


def _figures(n: int, started: float, published: float, done: float) -> dict:
    return {
        "jobs": n,
        "publish_per_s": round(n / (published - started), 1),
        "jobs_per_s": round(n / (done - started), 1),
        "seconds": round(done - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="jobs per system")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    database_prepare()
    django_setup()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        results = {
            "bare_celery": run_bare(args.n, args.concurrency, logs),
            "offload_single": run_offload(args.n, args.concurrency, logs, bulk=False),
            "offload_bulk": run_offload(args.n, args.concurrency, logs, bulk=True),
        }
    anchor = results["bare_celery"]
    print(f"no-op jobs end to end, n={args.n}, {args.concurrency} worker processes (prefork), "
          f"broker {BROKER_URL.split('@')[-1]}, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'system':<18}{'jobs/s':>10}{'ratio':>8}{'publish/s':>12}{'ratio':>8}")
    for name, fig in results.items():
        fig["ratio_jobs"] = round(fig["jobs_per_s"] / anchor["jobs_per_s"], 3)
        fig["ratio_publish"] = round(fig["publish_per_s"] / anchor["publish_per_s"], 3)
        print(f"{name:<18}{fig['jobs_per_s']:>10.0f}{fig['ratio_jobs']:>8.2f}"
              f"{fig['publish_per_s']:>12.0f}{fig['ratio_publish']:>8.2f}")  # fmt: skip
    budget = results["offload_single"]["ratio_jobs"] >= 0.6
    print(f"budget: tracked jobs >= 0.6x bare Celery: {'met' if budget else 'MISSED'}")
    path = results_write("throughput", {"n": args.n, "concurrency": args.concurrency, **results})
    print(f"written {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
