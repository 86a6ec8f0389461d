"""Shared pieces of the benchmarks: environment, processes, results."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offload_bench"
)
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def bench_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=DATABASE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def django_setup() -> None:
    os.environ.update(bench_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def database_prepare() -> None:
    """Create the benchmark database if needed and migrate it."""
    import psycopg

    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "-v0"], cwd=ROOT, env=bench_env(), check=True
    )


def jobs_reset() -> None:
    """Start a run from nothing: no job rows, no messages left on the test broker's queues."""
    from jobs.models import Job
    from tests.support import queues_purge

    Job.objects.all().delete()
    tables_vacuum(Job)
    queues_purge()


def jobs_unfinished(kind: str = "") -> bool:
    """Whether any job (of `kind`) has yet to reach a terminal status, as the poll that ends
    a timed run. One EXISTS over the few live (status, kind) index entries of the open
    statuses: a count of the succeeded rows, or a NOT IN over the terminal statuses, reads
    every finished row on each poll, which at 20,000 jobs cost the database being measured
    a few ms of CPU ten times a second."""
    from django.db import connection

    from jobs.models import TERMINAL_STATUSES, Job, JobStatus

    statuses = sorted(set(JobStatus.values) - TERMINAL_STATUSES)
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {Job._meta.db_table} "  # noqa: S608
        f"WHERE status IN ({', '.join(['%s'] * len(statuses))})"
        + (" AND kind = %s)" if kind else ")")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*statuses, kind] if kind else statuses)
        return cursor.fetchone()[0]


def tables_vacuum(*models) -> None:
    """Reclaim the rows earlier runs deleted: without it every run inherits the dead rows
    (and index entries) of all runs before it, and later runs measure the bloat."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')


def wait_until(predicate, *, timeout: float, interval: float = 0.02) -> float:
    """Poll until predicate() is true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(interval)
    return time.monotonic()


def worker_start(
    app: str,
    *,
    queues: str,
    concurrency: int,
    env: dict[str, str],
    log: Path,
    pool: str = "prefork",
    name: str = "",
    wait: bool = True,
):
    """Start a Celery worker; with `wait`, return once it is ready (see worker_ready)."""
    out = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "celery"), "-A", app, "worker", "-Q", queues, "-c", str(concurrency),
         "--pool", pool, "--without-mingle", "--without-gossip", "-l", "info",
         *(["-n", name] if name else [])],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    process.log = log
    if wait:
        wait_until(lambda: worker_ready(process), timeout=60)
    return process


def worker_ready(process: subprocess.Popen) -> bool:
    """Whether the worker consumes (it logs ` ready.`); raises if it exited instead."""
    if process.poll() is not None:
        raise RuntimeError(f"worker exited: {process.log.read_text()[-2000:]}")
    return b" ready." in process.log.read_bytes()


def worker_stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def results_write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


# Quick mode (`BENCH_QUICK=1`, set by `make bench` unless BENCH_QUICK=0): every benchmark
# runs a smaller workload so the whole set finishes in minutes on 2 cores.
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def sized(full: int, quick: int) -> int:
    """A workload size: `full` normally, `quick` in quick mode."""
    return quick if QUICK else full


def best_of(figures: list[dict], key: str) -> dict:
    """The round with the highest `key` (a rate): on a shared machine the best round is the
    one the least disturbed by everything else."""
    return max(figures, key=lambda figure: figure[key])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of a series (milliseconds in, milliseconds out)."""
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
    }


def api_token(username: str) -> str:
    """A user and its API token in the benchmark database (django_setup() first)."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user, _ = User.objects.get_or_create(username=username)
    return Token.objects.get_or_create(user=user)[0].key


def web_start(*, workers: int, log: Path, env: dict[str, str] | None = None):
    """uvicorn serving Offload with `workers` processes and a connection pool per process
    (as the Procfile's `web` runs it); returns (process, port)."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "python"), "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--no-access-log",
         "--log-level", "warning"],
        cwd=ROOT, env=env or bench_env(DATABASE_POOL_MAX_SIZE="10"), stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"web server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=60, interval=0.2)
    return process, port


def load_run(**options: object) -> dict:
    """Run bench/loadgen.py as a separate process (its own core share, its own GIL) and
    return its figures. Options are its command-line flags (underscores for dashes)."""
    args = [str(BIN / "python"), str(ROOT / "bench" / "loadgen.py")]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            args.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                args += [flag, str(item)]
        elif value is not None and value is not False:
            args += [flag, str(value)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)
