"""RabbitMQ and PostgreSQL restarted under load: every accepted job still ends once.

These stop and start the machine's real servers (`rabbitmqctl stop_app/start_app`,
`pg_ctlcluster … restart`), so they need to run as a user allowed to do that (CI is).
"""

import os
import shutil
import subprocess
import threading
import time

import pytest
from django.db import InterfaceError, OperationalError, connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import Job
from tests.reliability.harness import all_final, chaos_jobs, classify, jobs_submit
from tests.support import Worker, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed to restart the real server in this test")
    return path


def _db_tolerant(predicate):
    def check():
        try:
            return predicate()
        except (OperationalError, InterfaceError):
            connection.close()
            return False

    return check


@pytest.fixture
def isolated(worker):
    import socket

    from config.celery_app import app

    name = worker.name.replace("%h", socket.gethostname())
    app.control.cancel_consumer("default", destination=[name], reply=True)
    queues_purge()
    yield
    wait_for(_db_tolerant(lambda: queues_purge() or True), timeout=60)
    # A connection of its own: Celery's pooled one may predate the broker's restart.
    with app.connection_for_write() as conn:
        app.control.add_consumer("default", destination=[name], reply=True, connection=conn)


def _broker_up() -> bool:
    import kombu
    from django.conf import settings

    from jobs.services import BROKER_ERRORS

    try:
        with kombu.Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except BROKER_ERRORS:
        return False


def test_broker_restart_during_submission_and_processing(isolated, user, log_dir):
    rabbitmqctl = _tool("rabbitmqctl")
    victim = Worker(log_dir=log_dir, queues="default").start()
    token = Token.objects.create(user=user)
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def submit_loop():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        while not stop.is_set() and len(answers) < chaos_jobs():
            response = client.post(
                "/api/v1/jobs", {"kind": "test.effect", "params": {"seconds": 0.01}}, format="json"
            )
            body = response.json()
            answers.append((response.status_code, body.get("id")))
        connection.close()

    submitter = threading.Thread(target=submit_loop)
    started = time.monotonic()
    try:
        submitter.start()
        wait_for(lambda: len(answers) >= 100, timeout=60, what="submissions before the stop")
        subprocess.run([rabbitmqctl, "stop_app"], check=True, capture_output=True, timeout=120)
        try:
            wait_for(
                lambda: sum(code == 503 for code, _ in answers) >= 3,
                timeout=60,
                what="submits refused while the broker is down",
            )
        finally:
            subprocess.run([rabbitmqctl, "start_app"], check=True, capture_output=True, timeout=120)
        wait_for(_broker_up, timeout=120, interval=0.5, what="RabbitMQ back")
        wait_for(
            lambda: any(code == 202 for code, _ in answers[-20:]),
            timeout=120,
            what="submissions accepted again after the restart",
        )
        stop.set()
        submitter.join(timeout=60)
        accepted = [job_id for code, job_id in answers if code == 202]
        wait_for(lambda: all_final(accepted), timeout=300, interval=0.5, what="all accepted final")
    finally:
        stop.set()
        victim.stop()
    outcome = classify(accepted, started=started)
    refused = sum(1 for code, _ in answers if code == 503)

    print(outcome.table("broker restart") + f" refused_503={refused}")
    assert {code for code, _ in answers} <= {202, 503}
    assert refused >= 3
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert Job.objects.count() == len(accepted)  # a 503 left nothing behind


def test_a_retry_is_published_after_the_broker_closed_every_connection(isolated, api, log_dir):
    # A worker process keeps a pooled broker connection for the messages Celery itself
    # publishes (a retry's). After the broker closes every connection, the first retry
    # must reconnect once, not fail its publish and reject the job.
    rabbitmqctl = _tool("rabbitmqctl")
    victim = Worker(log_dir=log_dir, queues="default", concurrency=1).start()

    def failing_once() -> str:
        params = {"fail": "transient", "fail_attempts": 1}
        response = api.post("/api/v1/jobs", {"kind": "demo.sleep", "params": params}, format="json")
        assert response.status_code == 202, response.content
        return response.json()["id"]

    def ended(job_id: str):
        return Job.objects.filter(id=job_id, status__in=["succeeded", "failed", "dead"]).first()

    try:
        first_id = failing_once()
        first = wait_for(lambda: ended(first_id), timeout=60, what="a job that retried")
        assert (first.status, first.attempts) == ("succeeded", 2)  # the pool is in use now
        subprocess.run(
            [rabbitmqctl, "close_all_connections", "closed by a test"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        job_id = failing_once()
        job = wait_for(lambda: ended(job_id), timeout=90, what="the job after the close")
    finally:
        victim.stop()
    assert (job.status, job.attempts) == ("succeeded", 2)


def test_database_restart_during_processing(isolated, log_dir):
    pg_ctlcluster = _tool("pg_ctlcluster")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    ids = jobs_submit(chaos_jobs())
    started = time.monotonic()
    victim = Worker(log_dir=log_dir, queues="default").start()
    try:
        wait_for(
            lambda: Job.objects.filter(id__in=ids, status="succeeded").count() >= len(ids) // 5,
            timeout=120,
            what="a fifth of the jobs done",
        )
        subprocess.run(
            [pg_ctlcluster, "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        connection.close()
        wait_for(_db_tolerant(lambda: all_final(ids)), timeout=300, interval=0.5, what="all final")
    finally:
        victim.stop()
    outcome = classify(ids, started=started)

    print(outcome.table("database restart"))
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert not Job.objects.filter(id__in=ids, status="running").exists()
