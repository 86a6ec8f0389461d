"""The anchor: bare Celery on the same broker, no result backend, late acks, a no-op task.

Each run appends one byte to a counter file so the benchmark can see when all are done
without a result backend (a ~2 µs write, noise next to a task's cost).
"""

import os

from celery import Celery

app = Celery("bare", broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    broker_transport_options={"confirm_publish": True},
    worker_prefetch_multiplier=int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "4")),
    worker_hijack_root_logger=False,
)
_counter: int | None = None


@app.task(name="bare.noop")
def noop() -> None:
    global _counter
    if _counter is None:
        _counter = os.open(os.environ["BARE_COUNTER_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_counter, b"x")
