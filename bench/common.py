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
    queues_purge()


def wait_until(predicate, *, timeout: float, interval: float = 0.02) -> float:
    """Poll until predicate() is true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(interval)
    return time.monotonic()


def worker_start(app: str, *, queues: str, concurrency: int, env: dict[str, str], log: Path):
    out = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "celery"), "-A", app, "worker", "-Q", queues, "-c", str(concurrency),
         "--pool", "prefork", "--without-mingle", "--without-gossip", "-l", "info"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_until(lambda: b" ready." in log.read_bytes() or process.poll() is not None, timeout=60)
    if process.poll() is not None:
        raise RuntimeError(f"worker {app} exited: {log.read_text()[-2000:]}")
    return process


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
