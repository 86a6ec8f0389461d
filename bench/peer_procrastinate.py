"""Peer for bench/throughput.py: the same no-op task on Procrastinate (jobs are rows in
PostgreSQL). Its defaults: LISTEN/NOTIFY wake-ups, finished job rows kept."""

import os

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PROCRASTINATE_DSN", ""))
)


@app.task(name="bench.noop", queue="bench")
def noop() -> None:
    return None
