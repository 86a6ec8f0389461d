"""`make run`'s command on a fresh folder: SQLite, filesystem broker, web + worker + beat."""

import os
import re
import signal
import subprocess

import httpx
import pytest

from tests.support import BIN, ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def quickstart(tmp_path):
    port, flower_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        OFFLOAD_VAR_DIR=str(tmp_path / "var"),
        OFFLOAD_PORT=str(port),
        OFFLOAD_FLOWER_PORT=str(flower_port),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "quickstart.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "python"), "manage.py", "quickstart"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield process, log, f"http://127.0.0.1:{port}"
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_quickstart_runs_a_job_submitted_over_http(quickstart):
    process, log, url = quickstart

    def token():
        if process.poll() is not None:
            raise AssertionError(f"quickstart exited: {log.read_text()[-3000:]}")
        match = re.search(r"API token\s+(\w{40})", log.read_text())
        return match and match.group(1)

    key = wait_for(token, timeout=120, interval=0.2, what="the quickstart banner")
    text = log.read_text()
    assert f"{url}/admin/" in text
    assert "login: demo / demo" in text

    def ready():
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=60, interval=0.2, what="web server ready")
    wait_for(lambda: " ready." in log.read_text(), timeout=60, what="worker ready")
    headers = {"Authorization": f"Token {key}"}
    submitted = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "demo.sleep", "params": {"seconds": 0.2, "message": "quickstart"}},
        headers=headers,
    )
    assert submitted.status_code == 202, submitted.text
    job_url = submitted.headers["Location"]

    def finished():
        body = httpx.get(job_url, headers=headers).json()
        return body if body["status"] in {"succeeded", "failed", "dead"} else None

    body = wait_for(finished, timeout=60, interval=0.2, what="the job to finish")
    assert body["status"] == "succeeded"
    assert body["result"]["message"] == "quickstart"

    # Live events without RabbitMQ: the web process's database fallback feeds SSE.
    from tests.eventclients import SseReader

    live = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "demo.sleep", "params": {"seconds": 3, "steps": 3}},
        headers=headers,
    ).json()
    stream = SseReader(f"{url}/api/v1/jobs/{live['id']}/events", headers=headers).start()
    assert stream.ended.wait(60), "the quickstart stream did not end"
    assert stream.frames[0]["event"] == "snapshot"
    assert stream.frames[-1]["data"]["status"] == "succeeded"
    assert len(stream.frames) >= 2, "no live event after the snapshot"
    assert "beat: Starting" in log.read_text()

    flower = re.search(r"Flower\s+(\S+)\s+\(login: (\w+) / (\w+)\)", text)
    assert flower, text
    flower_url, *login = flower.groups()

    def flower_up() -> bool:
        try:
            return httpx.get(f"{flower_url}healthcheck", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(flower_up, timeout=60, interval=0.2, what="flower")
    assert httpx.get(f"{flower_url}workers").status_code == 401
    assert httpx.get(f"{flower_url}workers", auth=tuple(login)).status_code == 200

    # The beat leads on SQLite too: it releases a delayed job when it is due.
    delayed = httpx.post(
        f"{url}/api/v1/jobs",
        json={"kind": "demo.sleep", "countdown": 1, "params": {"message": "later"}},
        headers=headers,
    )
    assert delayed.status_code == 202, delayed.text
    assert delayed.json()["status"] == "scheduled"
    job_url = delayed.headers["Location"]
    body = wait_for(finished, timeout=60, interval=0.2, what="the delayed job to finish")
    assert body["status"] == "succeeded"
    assert "is the leader now" in log.read_text()
    assert "beat tick failed" not in log.read_text()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
