"""Signed webhook deliveries per second to a local receiver that verifies every signature.

Deliveries are recorded and their `webhook.deliver` jobs queued first; then real workers
start as the Procfile runs the `notifications` queue (thread pools, one process per core: 2
processes of 8 threads), and the clock runs from their start until every delivery has
succeeded. The anchor, in the same run: a bare loop that signs and POSTs the
same bodies to the same receiver from 2 threads over keep-alive connections, with the HTTP
client the worker uses (no job record, no delivery record). The sides alternate for
`--rounds` rounds and each side's best round is compared.

    python bench/webhooks.py [-n 3000] [--rounds 3] [--processes 2] [--threads 8]
"""

import argparse
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from common import (
    BIN,
    bench_env,
    database_prepare,
    django_setup,
    jobs_reset,
    results_write,
    sized,
    tables_vacuum,
    wait_until,
    worker_ready,
    worker_start,
    worker_stop,
)

HOST = "127.0.0.2"  # opened by OFFLOAD_WEBHOOK_ALLOWED_HOSTS in the test settings
CHUNK = 500


def receiver_start(secret: str, port: int, log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "python"), "-m", "uvicorn", "webhook_receiver:app", "--host", HOST,
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=Path(__file__).parent, env={**os.environ, "WEBHOOK_SECRET": secret},
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process


def counts(port: int) -> dict:
    # urllib, not httpx: an httpx.get builds a TLS context each call (about 50 ms of CPU),
    # which, polled every 0.1 s, took CPU from the worker being measured.
    with urllib.request.urlopen(f"http://{HOST}:{port}/count", timeout=10) as response:
        return json.load(response)


def run_anchor(n: int, secret: str, port: int, payload: dict) -> float:
    """Sign and POST from 2 threads, each over its own keep-alive connection, with the
    client the worker uses (http.client)."""
    from notifications import signing

    body = json.dumps(payload, separators=(",", ":")).encode()

    def sender(count: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=15)
        try:
            for _ in range(count):
                message_id = f"msg_{uuid.uuid4().hex}"
                headers = signing.headers(
                    [secret], message_id=message_id, timestamp=int(time.time()), body=body
                )
                headers["Content-Type"] = "application/json"
                connection.request("POST", "/hook", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                assert response.status == 204, answer
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(n // 2,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def run_offload(
    n: int,
    *,
    user,
    endpoint,
    job,
    url: str,
    payload: dict,
    port: int,
    processes: int,
    threads: int,
    logs: Path,
) -> float:
    """Record n deliveries and queue their attempt jobs, then start a worker: seconds from
    its start until every attempt is answered and recorded."""
    from jobs.services import JobSpec, jobs_bulk_submit
    from notifications import services
    from notifications.models import Delivery

    Delivery.objects.all().delete()
    deliveries = [
        Delivery(
            owner=user,
            endpoint=endpoint,
            job=job,
            url=url,
            event_type="job.succeeded",
            message_id=f"msg_{uuid.uuid4().hex}",
            dedupe_key=uuid.uuid4().hex,
            payload=payload,
        )
        for _ in range(n)
    ]
    Delivery.objects.bulk_create(deliveries, batch_size=1000)
    # The attempt jobs wait in the queue; the clock runs from the worker's start,
    # so it measures delivering, not submitting (bench/throughput.py measures that).
    for offset in range(0, n, CHUNK):
        specs = [
            JobSpec(kind=services.DELIVER_KIND, params={"delivery_id": str(d.id)})
            for d in deliveries[offset : offset + CHUNK]
        ]
        jobs_bulk_submit(specs=specs, owner=None)
    before = counts(port)
    # As the Procfile runs the notifications queue: thread-pool workers, one per core,
    # without Celery's line per task. They start together, and the clock runs from the
    # first one ready.
    workers = [
        worker_start(
            "config",
            queues="notifications",
            concurrency=threads,
            env=bench_env(CELERY_TASK_LOG_LEVEL="WARNING"),
            log=logs / f"worker-{number}.log",
            pool="threads",
            name=f"notifications{number}@%h",
            wait=False,
        )
        for number in range(1, processes + 1)
    ]
    try:
        wait_until(lambda: any(worker_ready(w) for w in workers), timeout=60, interval=0.01)
        ready = time.monotonic()
        # Watch the receiver while the worker runs (a count query on the deliveries
        # every 0.1 s would load the database being measured), then wait until every
        # attempt is also recorded: the clock stops at the last record.
        wait_until(lambda: _answered(counts(port)) - _answered(before) >= n, timeout=1200,
                   interval=0.1)  # fmt: skip
        wait_until(
            lambda: Delivery.objects.filter(status__in=["succeeded", "failed"]).count() >= n,
            timeout=120,
            interval=0.01,
        )
        seconds = time.monotonic() - ready
    finally:
        for worker in workers:
            worker_stop(worker)
    failed = Delivery.objects.exclude(status="succeeded").count()
    if failed:
        raise RuntimeError(f"{failed} deliveries did not succeed")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=sized(3000, 1500), help="deliveries per round")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--rounds", type=int, default=sized(3, 2), help="rounds per side")
    args = parser.parse_args()
    n = args.n - args.n % 2

    database_prepare()
    django_setup()
    from django.contrib.auth.models import User
    from django.utils import timezone

    from jobs.models import Job
    from notifications import services
    from notifications.models import Delivery, Endpoint
    from tests.support import free_port

    jobs_reset()
    Delivery.objects.all().delete()
    tables_vacuum(Delivery)
    user, _ = User.objects.get_or_create(username="bench-webhooks")
    port = free_port()
    url = f"http://{HOST}:{port}/hook"
    endpoint = services.endpoint_create(owner=user, url=url, event_types=["job.succeeded"])
    Endpoint.objects.exclude(id=endpoint.id).filter(owner=user).delete()
    job = Job.objects.create(kind="demo.sleep", owner=user, status="succeeded", version=3)
    payload = {
        "type": "job.succeeded",
        "timestamp": timezone.now().isoformat(),
        "data": {"job_id": str(job.id), "kind": "demo.sleep", "status": "succeeded",
                 "version": 3, "progress": {"percent": 100.0}, "result": {"ok": True}},
    }  # fmt: skip

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        receiver = receiver_start(endpoint.secret, port, logs / "receiver.log")
        try:
            wait_until(lambda: _up(port), timeout=30, interval=0.1)
            # This machine's speed drifts by tens of percent within a minute: the sides
            # alternate, and each side's best round is compared.
            for _ in range(args.rounds):
                anchor = n / run_anchor(n, endpoint.secret, port, payload)
                offload = n / run_offload(
                    n, user=user, endpoint=endpoint, job=job, url=url, payload=payload,
                    port=port, processes=args.processes, threads=args.threads, logs=logs,
                )  # fmt: skip
                rounds.append(
                    {"anchor_per_s": round(anchor, 1), "offload_per_s": round(offload, 1)}
                )
            final_counts = counts(port)
        finally:
            receiver.terminate()
            receiver.wait(30)

    fig = {
        "deliveries": n,
        "rounds": rounds,
        "offload_per_s": max(r["offload_per_s"] for r in rounds),
        "anchor_per_s": max(r["anchor_per_s"] for r in rounds),
        "verified_by_receiver": final_counts["verified"],
        "rejected_by_receiver": final_counts["rejected"],
    }
    fig["ratio"] = round(fig["offload_per_s"] / fig["anchor_per_s"], 3)
    expected = 2 * n * args.rounds  # every anchor and every Offload delivery
    print(f"signed webhook deliveries, n={n} per round, {args.rounds} rounds, "
          f"worker {args.processes} processes x {args.threads} threads, receiver {HOST} "
          f"(uvicorn), "
          f"{os.cpu_count()} cores")  # fmt: skip
    for number, r in enumerate(rounds, 1):
        print(f"round {number}: bare loop {r['anchor_per_s']:.0f}/s, "
              f"offload {r['offload_per_s']:.0f}/s")  # fmt: skip
    print(f"{'best of each':<34}{'per s':>10}{'ratio':>8}")
    print(f"{'bare sign+POST loop (2 threads)':<34}{fig['anchor_per_s']:>10.0f}{1:>8.2f}")
    print(f"{'offload webhook.deliver jobs':<34}{fig['offload_per_s']:>10.0f}{fig['ratio']:>8.2f}")
    print(f"receiver verified {final_counts['verified']}/{expected} deliveries, rejected "
          f"{final_counts['rejected']}")  # fmt: skip
    ok = (
        fig["offload_per_s"] >= 300
        and final_counts["verified"] == expected
        and not final_counts["rejected"]
    )
    fig["budgets"] = {"at_least_300_verified_per_s": ok}
    print(f"budget: at least 300 verified deliveries/s: {'met' if ok else 'MISSED'}")
    print(f"written {results_write('webhooks', fig)}")


def _answered(seen: dict) -> int:
    return seen["verified"] + seen["rejected"]


def _up(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://{HOST}:{port}/count", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
