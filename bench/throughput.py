"""No-op jobs end to end: bare Celery (the anchor) against Offload's tracked jobs and two
peers, all in one run on the same machine.

Systems, each with `--concurrency` worker processes of one thread (Celery's prefork pool,
Dramatiq `--processes N --threads 1`, N Procrastinate workers of concurrency 1):
- bare_celery: the anchor, on the same RabbitMQ, no result backend, late acks, confirms;
- offload_single: `job_submit` one by one through the service layer;
- offload_bulk: `jobs_bulk_submit` in chunks of 500;
- offload_http: `POST /api/v1/jobs` from concurrent clients (bench/loadgen.py, a separate
  process) against uvicorn with 2 processes;
- dramatiq: the same no-op actor on the same RabbitMQ (late acks, publisher confirms);
- procrastinate: the same no-op task as rows in PostgreSQL (finished rows kept, its
  default), deferred one by one.
For each the clock starts at the first publish and stops when the last job has finished;
the publish rate is taken from the same run (workers consume while the loop publishes).
The systems take turns for `--rounds` rounds and each keeps its best round, so a change in
the machine's load during the run does not favour whichever system ran in a quiet moment.

    python bench/throughput.py [-n 20000] [--rounds 2] [--concurrency 2] [--only offload_single,...]
"""

import argparse
import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    BIN,
    BROKER_URL,
    DATABASE_URL,
    ROOT,
    api_token,
    bench_env,
    best_of,
    database_prepare,
    django_setup,
    jobs_reset,
    jobs_unfinished,
    load_run,
    results_write,
    sized,
    wait_until,
    web_start,
    worker_start,
    worker_stop,
)

BULK_CHUNK = 500
HTTP_CLIENTS = 8
WEB_WORKERS = 2
BENCH_DIR = Path(__file__).resolve().parent


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
        done = wait_until(lambda: not jobs_unfinished(), timeout=1200, interval=0.1)
        not_ok = Job.objects.exclude(status="succeeded").count()
    finally:
        worker_stop(worker)
    if not_ok:
        raise RuntimeError(f"{not_ok} Offload jobs did not succeed")
    return _figures(n, started, published, done)


def run_http(n: int, concurrency: int, logs: Path) -> dict:
    from jobs.models import Job

    jobs_reset()
    token = api_token("bench-throughput")
    web, port = web_start(workers=WEB_WORKERS, log=logs / "web.log")
    worker = worker_start(
        "config", queues="default", concurrency=concurrency, env=bench_env(),
        log=logs / "offload-worker-http.log",
    )  # fmt: skip
    try:
        started = time.monotonic()
        load = load_run(
            port=port, method="POST", path="/api/v1/jobs", body='{"kind": "demo.sleep"}',
            header=[f"Authorization: Token {token}"], connections=HTTP_CLIENTS, requests=n,
        )  # fmt: skip
        published = time.monotonic()
        if load["statuses"] != {"202": n}:
            raise RuntimeError(f"HTTP submits not all accepted: {load['statuses']}")
        done = wait_until(lambda: not jobs_unfinished(), timeout=1200, interval=0.1)
        not_ok = Job.objects.exclude(status="succeeded").count()
    finally:
        worker_stop(worker)
        worker_stop(web)
    if not_ok:
        raise RuntimeError(f"{not_ok} Offload jobs submitted over HTTP did not succeed")
    return _figures(n, started, published, done) | {"clients": HTTP_CLIENTS, "web": WEB_WORKERS}


def _queue_purge(name: str) -> None:
    """Empty a queue left over from an aborted run (absent on a fresh broker)."""
    import kombu
    from amqp.exceptions import NotFound

    with kombu.Connection(BROKER_URL) as conn, contextlib.suppress(NotFound):
        conn.channel().queue_purge(name)


def run_dramatiq(n: int, concurrency: int, logs: Path) -> dict:
    counter = logs / "dramatiq.counter"
    counter.write_bytes(b"")
    env = bench_env(BARE_COUNTER_FILE=str(counter), PYTHONPATH=str(BENCH_DIR))
    os.environ.setdefault("BARE_COUNTER_FILE", str(counter))
    import peer_dramatiq

    _queue_purge(peer_dramatiq.QUEUE)
    log = logs / "dramatiq-worker.log"
    process = subprocess.Popen(
        [str(BIN / "dramatiq"), "peer_dramatiq", "--processes", str(concurrency),
         "--threads", "1"],
        cwd=BENCH_DIR, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        wait_until(lambda: log.read_bytes().count(b"is ready") >= concurrency, timeout=60)
        started = time.monotonic()
        for _ in range(n):
            peer_dramatiq.noop.send()
        published = time.monotonic()
        done = wait_until(lambda: counter.stat().st_size >= n, timeout=600)
    finally:
        worker_stop(process)
        peer_dramatiq.broker.close()
    return _figures(n, started, published, done)


def _procrastinate_database() -> str:
    """A fresh database for Procrastinate's schema, beside the benchmark database."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1] + "_procrastinate"
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return DATABASE_URL.rsplit("/", 1)[0] + "/" + name


def run_procrastinate(n: int, concurrency: int, logs: Path) -> dict:
    import psycopg

    dsn = _procrastinate_database().replace("postgres://", "postgresql://", 1)
    os.environ["PROCRASTINATE_DSN"] = dsn
    env = bench_env(PROCRASTINATE_DSN=dsn, PYTHONPATH=str(BENCH_DIR))
    cli = [str(BIN / "procrastinate"), "--app=peer_procrastinate.app"]
    subprocess.run([*cli, "schema", "--apply"], cwd=BENCH_DIR, env=env, check=True,
                   capture_output=True)  # fmt: skip
    import peer_procrastinate

    workers = []
    for index in range(concurrency):
        log = logs / f"procrastinate-worker-{index}.log"
        workers.append(subprocess.Popen(
            [*cli, "worker", "--concurrency", "1", "--queues", "bench"],
            cwd=BENCH_DIR, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        ))  # fmt: skip
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:

            def finished() -> int:
                sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                return conn.execute(sql).fetchone()[0]

            with peer_procrastinate.app.open():
                peer_procrastinate.noop.defer()  # the workers take this one once they are up
                wait_until(lambda: finished() >= 1, timeout=60, interval=0.1)
                started = time.monotonic()
                for _ in range(n):
                    peer_procrastinate.noop.defer()
                published = time.monotonic()
            done = wait_until(lambda: finished() >= n + 1, timeout=1200, interval=0.1)
    finally:
        for worker in workers:
            worker_stop(worker)
    return _figures(n, started, published, done)


def _figures(n: int, started: float, published: float, done: float) -> dict:
    return {
        "jobs": n,
        "publish_per_s": round(n / (published - started), 1),
        "jobs_per_s": round(n / (done - started), 1),
        "seconds": round(done - started, 2),
    }


SYSTEMS = {
    "bare_celery": run_bare,
    "offload_single": lambda n, c, logs: run_offload(n, c, logs, bulk=False),
    "offload_bulk": lambda n, c, logs: run_offload(n, c, logs, bulk=True),
    "offload_http": run_http,
    "dramatiq": run_dramatiq,
    "procrastinate": run_procrastinate,
}
OFFLOAD = ("offload_single", "offload_bulk", "offload_http")
PEERS = ("dramatiq", "procrastinate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=sized(20_000, 2_000), help="jobs per round")
    parser.add_argument("--rounds", type=int, default=2, help="turns per system (best kept)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--only", default="", help="systems to run (the anchor always runs)")
    args = parser.parse_args()
    chosen = [name for name in SYSTEMS if not args.only or name in args.only.split(",")]
    if "bare_celery" not in chosen:
        chosen.insert(0, "bare_celery")

    database_prepare()
    django_setup()
    rounds: dict[str, list[dict]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(1, args.rounds + 1):
            for name in chosen:
                fig = SYSTEMS[name](args.n, args.concurrency, Path(tmp))
                rounds[name].append(fig)
                print(f"  round {turn} {name}: {fig['jobs_per_s']:.0f} jobs/s, "
                      f"{fig['publish_per_s']:.0f} published/s", flush=True)  # fmt: skip
        jobs_reset()
    results: dict[str, dict] = {}
    for name, figs in rounds.items():
        best = best_of(figs, "jobs_per_s")
        results[name] = {
            **best,
            "publish_per_s": max(fig["publish_per_s"] for fig in figs),
            "rounds_jobs_per_s": [fig["jobs_per_s"] for fig in figs],
        }
    anchor = results["bare_celery"]
    broker = BROKER_URL.split("@")[-1]
    print(f"no-op jobs end to end, n={args.n}, best of {args.rounds} rounds, "
          f"{args.concurrency} worker processes of one thread each, broker {broker}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'system':<16}{'jobs/s':>9}{'x bare':>8}{'publish/s':>11}{'x bare':>8}")
    for name, fig in results.items():
        fig["ratio_jobs"] = round(fig["jobs_per_s"] / anchor["jobs_per_s"], 3)
        fig["ratio_publish"] = round(fig["publish_per_s"] / anchor["publish_per_s"], 3)
        print(f"{name:<16}{fig['jobs_per_s']:>9.0f}{fig['ratio_jobs']:>8.2f}"
              f"{fig['publish_per_s']:>11.0f}{fig['ratio_publish']:>8.2f}")  # fmt: skip
    versus: dict[str, dict[str, float]] = {}
    for name in (n for n in OFFLOAD if n in results):
        for peer in (p for p in PEERS if p in results):
            ratio = round(results[name]["jobs_per_s"] / results[peer]["jobs_per_s"], 3)
            versus.setdefault(name, {})[f"ratio_vs_{peer}"] = ratio
            print(f"{name} / {peer}: {ratio:.2f}x")
    budgets = {}
    if "offload_single" in results:
        budgets["single_end_to_end_0.6x"] = results["offload_single"]["ratio_jobs"] >= 0.6
    if "offload_bulk" in results:
        budgets["bulk_publish_1.0x"] = results["offload_bulk"]["ratio_publish"] >= 1.0
        budgets["bulk_end_to_end_0.6x"] = results["offload_bulk"]["ratio_jobs"] >= 0.6
    for name, ratios in versus.items():
        budgets[f"{name}_ahead_of_peers"] = all(r >= 1.0 for r in ratios.values())
    for budget, met in budgets.items():
        print(f"budget {budget}: {'met' if met else 'MISSED'}")
    path = results_write(
        "throughput",
        {"n": args.n, "rounds": args.rounds, "concurrency": args.concurrency, **results,
         "versus_peers": versus, "budgets": budgets},
    )  # fmt: skip
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
