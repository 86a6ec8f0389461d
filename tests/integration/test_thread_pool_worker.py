"""The notifications queue on a thread-pool worker (`--pool threads`), as the Procfile runs
it: deliveries go on past a receiver that hangs, the keeper marks the hanging attempt
running, retries are released, and every request is signed and recorded once; email jobs
sent side by side each reach every recipient once, a 4xx retried through the pool."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from jobs.models import Job
from notifications import services
from notifications.models import Delivery
from tests.eventclients import WebhookReceiver
from tests.smtp import SmtpServer
from tests.support import Worker, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FAST = 40


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def thread_worker(no_worker, log_dir, smtp):
    """The only consumer meanwhile (the session worker, if running, is paused)."""
    smtp.reset()
    # An attempt's deadline long enough that the hanging one outlasts everything else. A
    # retry's message is due at once, so another thread takes it while the attempt before
    # it is still writing `retrying`: the race a retry's run must wait out.
    env = process_env(
        OFFLOAD_WEBHOOK_TIMEOUT="60",
        OFFLOAD_EMAIL_RETRY_BACKOFF="0",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp.port),
    )
    worker = Worker(
        queues="notifications",
        concurrency=4,
        log_dir=log_dir,
        extra_args=("--pool", "threads"),
        env=env,
    ).start()
    yield worker
    worker.stop()


def _deliveries(owner, endpoint, count: int) -> list[Delivery]:
    job = Job.objects.create(kind="demo.sleep", owner=owner, status="succeeded", version=3)
    deliveries = [
        Delivery.objects.create(
            owner=owner,
            endpoint=endpoint,
            job=job,
            url=endpoint.url,
            event_type="job.succeeded",
            message_id=f"msg_{uuid.uuid4().hex}",
            dedupe_key=uuid.uuid4().hex,
            payload={"type": "job.succeeded", "n": n},
        )
        for n in range(count)
    ]
    for delivery in deliveries:
        services.delivery_submit(delivery_id=delivery.id)
    return deliveries


def _attempt_job(delivery: Delivery) -> Job:
    return Job.objects.get(kind=services.DELIVER_KIND, params__delivery_id=str(delivery.id))


def test_a_hanging_receiver_holds_one_thread_and_the_others_deliver(thread_worker):
    owner = get_user_model().objects.create_user("threads")
    slow = WebhookReceiver(behaviour=lambda n: "hang", hang_seconds=120)
    # The first request to the fast receiver fails: its retry goes through the same pool.
    fast = WebhookReceiver(behaviour=lambda n: 500 if n == 1 else 204)
    try:
        slow_endpoint = services.endpoint_create(
            owner=owner, url=slow.url, event_types=["job.succeeded"]
        )
        fast_endpoint = services.endpoint_create(
            owner=owner, url=fast.url, event_types=["job.succeeded"]
        )
        slow.secrets, fast.secrets = [slow_endpoint.secret], [fast_endpoint.secret]
        (hanging,) = _deliveries(owner, slow_endpoint, 1)
        wait_for(lambda: slow.requests, timeout=30, what="the hanging receiver to be called")
        delivered = _deliveries(owner, fast_endpoint, FAST)

        def all_delivered() -> bool:
            done = Delivery.objects.filter(id__in=[d.id for d in delivered], status="succeeded")
            return done.count() == FAST

        wait_for(all_delivered, timeout=60, what=f"{FAST} deliveries past the hanging one")
        # Still in its first attempt, marked running by the keeper thread.
        hanging.refresh_from_db()
        assert (hanging.status, hanging.attempts) == ("sending", 1)
        assert _attempt_job(hanging).status == "running"
    finally:
        slow.release.set()
        fast.close()
    wait_for(
        lambda: Delivery.objects.get(id=hanging.id).status == "succeeded",
        timeout=30,
        what="the released delivery to succeed",
    )
    slow.close()

    assert len(fast.requests) == FAST + 1  # one retried after its 500
    assert all(request["verified"] == {fast_endpoint.secret: True} for request in fast.requests)
    assert len({request["headers"]["webhook-id"] for request in fast.requests}) == FAST
    attempts = sorted(
        Delivery.objects.filter(endpoint=fast_endpoint).values_list("attempts", flat=True)
    )
    assert attempts == [1] * (FAST - 1) + [2]
    jobs = Job.objects.filter(kind=services.DELIVER_KIND)
    assert jobs.count() == FAST + 2  # an attempt job per attempt
    assert set(jobs.values_list("status", flat=True)) == {"succeeded"}
    assert slow.requests[0]["verified"] == {slow_endpoint.secret: True}


def test_email_jobs_side_by_side_reach_every_recipient_once(thread_worker, smtp, api):
    # carol's first DATA gets a 451: her job retries through the pool and sends only to her.
    def reply(phase: str, rcpt: str, seen: int) -> str | None:
        first_data_to_carol = (phase, rcpt, seen) == ("DATA", "carol@example.org", 1)
        return "451 4.3.0 Try again" if first_data_to_carol else None

    smtp.reset(reply=reply)
    recipients = [[f"r{n}a@example.org", f"r{n}b@example.org"] for n in range(6)]
    recipients[2][1] = "carol@example.org"
    ids = []
    for to in recipients:
        body = {"kind": "email", "params": {"template": "reminder", "to": to,
                "context": {"title": "T", "message": "M"}}}  # fmt: skip
        response = api.post("/api/v1/jobs", body, format="json")
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])

    def finished() -> bool:
        done = Job.objects.filter(id__in=ids, status__in=["succeeded", "failed", "dead"])
        return done.count() == len(ids)

    wait_for(finished, timeout=90, what="every email job to finish")
    jobs = {str(job.id): job for job in Job.objects.filter(id__in=ids)}
    assert {job.status for job in jobs.values()} == {"succeeded"}
    assert smtp.count() == {address: 1 for to in recipients for address in to}
    assert jobs[ids[2]].attempts == 2
    assert [jobs[i].attempts for i in ids if i != ids[2]] == [1] * 5
