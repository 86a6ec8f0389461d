"""SSE fan-out: many open streams on ONE uvicorn process while jobs run and complete.

Jobs are submitted with no worker running; the clients open their streams (each gets its
snapshot); then a worker starts and the jobs report progress and finish. Every client
records, for every event it receives, the delay from the event's `at` (stamped when the
change was committed and published) to its receipt. The anchor, in the same run, is one
plain consumer of a queue bound to `offload.events` (what the web process itself
consumes): the difference is the cost of the in-memory fan-out and the HTTP streams.
Clients, server, worker, broker and database share the machine's cores.

    python bench/sse_fanout.py [--clients 1000] [--jobs 50]
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from common import (
    BIN,
    BROKER_URL,
    ROOT,
    bench_env,
    database_prepare,
    django_setup,
    jobs_reset,
    percentile,
    results_write,
    sized,
    wait_until,
    worker_start,
    worker_stop,
)

TERMINAL = {"succeeded", "failed", "dead", "cancelled"}


def _now() -> float:
    return time.time()


def _delay_ms(event: dict, received: float) -> float:
    return (received - datetime.fromisoformat(event["at"]).timestamp()) * 1000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def sse_client(port: int, token: str, job_id: str, delays: list, done: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    name = None
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"event: "):
                name = line[7:].strip()
            elif line.startswith(b"data: "):
                # Chunked encoding wraps frames; data lines stay whole.
                received = _now()
                event = json.loads(line[6:])
                if name == b"job":
                    delays.append(_delay_ms(event, received))
                if event["status"] in TERMINAL:
                    break
    finally:
        done.append(job_id)
        writer.close()


def anchor_consumer(stop: threading.Event, delays: list, ready: threading.Event) -> None:
    import kombu

    exchange = kombu.Exchange("offload.events", type="topic", durable=True)
    queue = kombu.Queue("", exchange, routing_key="job.#", exclusive=True, auto_delete=True)
    with kombu.Connection(BROKER_URL) as conn:

        def on_message(body, message):
            delays.append(_delay_ms(body, _now()))

        with conn.Consumer(queue, callbacks=[on_message], no_ack=True, accept=["json"]):
            ready.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)


async def run_clients(port, token, job_ids, clients, delays, done, opened):
    tasks = []
    for i in range(clients):
        tasks.append(
            asyncio.create_task(sse_client(port, token, job_ids[i % len(job_ids)], delays, done))
        )
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not open a thousand sockets in one burst
    opened.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=sized(1000, 200))
    parser.add_argument("--jobs", type=int, default=sized(50, 20))
    parser.add_argument("--seconds", type=float, default=2.0, help="each job's run time")
    parser.add_argument("--steps", type=int, default=4, help="progress steps per job")
    args = parser.parse_args()

    database_prepare()
    django_setup()
    import subprocess

    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from jobs.services import JobSpec, jobs_bulk_submit
    from tests.support import free_port

    jobs_reset()
    user, _ = User.objects.get_or_create(username="bench-sse")
    token, _ = Token.objects.get_or_create(user=user)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        web_log = open(logs / "web.log", "wb")  # noqa: SIM115
        web = subprocess.Popen(
            [str(BIN / "python"), "-m", "uvicorn", "config.asgi:application", "--host",
             "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=bench_env(), stdout=web_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        worker = None
        try:
            import httpx

            def up() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, timeout=60, interval=0.2)
            rss_idle = rss_mb(web.pid)
            staff, _ = User.objects.update_or_create(
                username="bench-staff", defaults={"is_staff": True}
            )
            staff_token = Token.objects.get_or_create(user=staff)[0].key
            spec = JobSpec(kind="demo.sleep", params={"seconds": args.seconds, "steps": args.steps})
            jobs = jobs_bulk_submit(specs=[spec] * args.jobs, owner=user)
            job_ids = [str(job.id) for job in jobs]

            anchor_delays: list[float] = []
            stop, anchor_ready = threading.Event(), threading.Event()
            anchor = threading.Thread(
                target=anchor_consumer, args=(stop, anchor_delays, anchor_ready), daemon=True
            )
            anchor.start()
            anchor_ready.wait(10)

            delays: list[float] = []
            done: list[str] = []
            opened = threading.Event()
            result: dict = {}

            def clients_thread() -> None:
                try:
                    asyncio.run(
                        run_clients(port, token.key, job_ids, args.clients, delays, done, opened)
                    )
                except BaseException as exc:  # reported below
                    result["error"] = exc

            thread = threading.Thread(target=clients_thread, daemon=True)
            thread.start()
            opened.wait(120)

            def subscribers() -> int:
                headers = {"Authorization": f"Token {staff_token}"}
                # Instrumentation, not measured: it waits behind the streams being opened.
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/events/stats", headers=headers, timeout=60
                )
                assert response.status_code == 200, response.text
                return response.json()["subscribers"]

            wait_until(lambda: subscribers() >= args.clients, timeout=120, interval=0.2)
            rss_open = rss_mb(web.pid)

            started = time.monotonic()
            worker = worker_start(
                "config", queues="default", concurrency=2, env=bench_env(), log=logs / "w.log"
            )
            rss_peak = rss_open
            while thread.is_alive():
                rss_peak = max(rss_peak, rss_mb(web.pid))
                thread.join(0.2)
            elapsed = time.monotonic() - started
            stop.set()
            if "error" in result:
                raise result["error"]
            left = subscribers()
        except BaseException:
            print((logs / "web.log").read_text()[-3000:])
            raise
        finally:
            if worker is not None:
                worker_stop(worker)
            web.terminate()
            web.wait(30)

    fig = {
        "clients": args.clients,
        "jobs": args.jobs,
        "events_received": len(delays),
        "streams_finished": len(done),
        "p50_ms": round(percentile(delays, 50), 1),
        "p99_ms": round(percentile(delays, 99), 1),
        "max_ms": round(max(delays), 1),
        "mean_ms": round(statistics.fmean(delays), 1),
        "anchor_events": len(anchor_delays),
        "anchor_p50_ms": round(percentile(anchor_delays, 50), 1),
        "anchor_p99_ms": round(percentile(anchor_delays, 99), 1),
        "rss_idle_mb": round(rss_idle, 1),
        "rss_open_mb": round(rss_open, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "subscribers_left": left,
        "seconds": round(elapsed, 2),
    }
    fig["ratio_p99"] = round(fig["p99_ms"] / max(fig["anchor_p99_ms"], 0.1), 2)
    print(
        f"SSE fan-out: {args.clients} streams on one uvicorn process, {args.jobs} jobs "
        f"({args.steps} progress steps each), {os.cpu_count()} cores shared with the clients"
    )
    print(f"events received by clients: {fig['events_received']}, streams finished: "
          f"{fig['streams_finished']}/{args.clients}, subscribers left: {left}")  # fmt: skip
    print(f"delay change->client  p50 {fig['p50_ms']} ms  p99 {fig['p99_ms']} ms  "
          f"max {fig['max_ms']} ms")  # fmt: skip
    print(f"anchor change->queue  p50 {fig['anchor_p50_ms']} ms  p99 {fig['anchor_p99_ms']} ms"
          f"  (p99 ratio {fig['ratio_p99']}x)")  # fmt: skip
    print(f"web process RSS: idle {fig['rss_idle_mb']} MB, {args.clients} streams open "
          f"{fig['rss_open_mb']} MB, peak {fig['rss_peak_mb']} MB")  # fmt: skip
    fig["budgets"] = {f"p99_under_200ms_{args.clients}_streams": fig["p99_ms"] < 200}
    print(f"budget: p99 under 200 ms: {'met' if fig['p99_ms'] < 200 else 'MISSED'}")
    path = results_write("sse_fanout", fig)
    print(f"written {path}")


if __name__ == "__main__":
    main()
