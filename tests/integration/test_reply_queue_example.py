"""The README's reply-queue consumer (examples/reply_consumer.py) runs and sees a job end."""

import subprocess
import uuid

import pytest
from django.conf import settings

from tests.support import BIN, ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_example_consumer_receives_the_completion(worker, api, tmp_path):
    queue = f"test.example.{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.txt"
    err = tmp_path / "err.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        consumer = subprocess.Popen(
            [str(BIN / "python"), "examples/reply_consumer.py", settings.CELERY_BROKER_URL,
             "--queue", queue, "--binding", "job.#.succeeded", "--max", "1", "--timeout", "60"],
            cwd=ROOT, stdout=stdout, stderr=stderr,
        )  # fmt: skip
        try:
            wait_for(lambda: b"listening" in err.read_bytes(), timeout=30)
            job_id = api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json").json()["id"]
            assert consumer.wait(timeout=60) == 0
        finally:
            if consumer.poll() is None:
                consumer.kill()
    line = out.read_text().strip()
    assert line.startswith("job.demo.sleep.succeeded ")
    assert f'"job_id": "{job_id}"' in line
    from config.celery_app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)
