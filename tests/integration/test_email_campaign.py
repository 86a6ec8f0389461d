"""`email_campaign` over 2,000 contacts through two real workers to a real SMTP server:
everyone subscribed gets one message, unsubscribed contacts none, the shared rate limit
holds (measured from the server's receive times), and the unsubscribe link in a message
works against the live web server and refuses a tampered token."""

import re
import socket
from collections import Counter

import httpx
import pytest
from django.conf import settings
from django.core import signing
from django.utils import timezone

from config.celery_app import app
from jobs.models import Job
from notifications.models import Contact, EmailSend
from tests.smtp import SmtpServer
from tests.support import Worker, process_env, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RATE = 60.0  # messages per second, across both workers
CONTACTS = 2000
UNSUBSCRIBED = 40


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def campaign_workers(worker, log_dir, smtp, web):
    """Two workers (four processes) sending to the test's SMTP server with the rate limit;
    the session worker stops consuming meanwhile."""
    name = worker.name.replace("%h", socket.gethostname())
    queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
    for queue in queues:
        app.control.cancel_consumer(queue, destination=[name], reply=True)
    queues_purge()
    env = process_env(
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp.port),
        OFFLOAD_EMAIL_RATE_LIMIT=str(RATE),
        OFFLOAD_EMAIL_CAMPAIGN_CHUNK="100",
        OFFLOAD_PUBLIC_URL=web.url,
    )
    workers = [Worker(log_dir=log_dir, env=env, concurrency=2).start() for _ in range(2)]
    yield workers
    for process in workers:
        process.stop()
    queues_purge()
    for queue in queues:
        app.control.add_consumer(queue, destination=[name], reply=True)


def _contacts() -> tuple[set[str], set[str]]:
    now = timezone.now()
    Contact.objects.bulk_create(
        [
            Contact(
                email=f"reader{i:05d}@example.org",
                first_name=f"Reader{i}",
                country="DE",
                attributes={"plan": "pro" if i % 2 else "free"},
                unsubscribed_at=now if i < UNSUBSCRIBED else None,
            )
            for i in range(CONTACTS)
        ]
        # not matched by the filter: another country
        + [Contact(email=f"other{i}@example.org", country="FR") for i in range(50)]
    )
    subscribed = {f"reader{i:05d}@example.org" for i in range(UNSUBSCRIBED, CONTACTS)}
    unsubscribed = {f"reader{i:05d}@example.org" for i in range(UNSUBSCRIBED)}
    return subscribed, unsubscribed


def _max_in_window(times: list[float], window: float) -> int:
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_campaign_sends_once_each_at_the_rate_and_skips_unsubscribed(
    campaign_workers, smtp, staff_api, web
):
    subscribed, unsubscribed = _contacts()
    response = staff_api.post(
        "/api/v1/jobs",
        {
            "kind": "email_campaign",
            "params": {
                "template": "newsletter",
                "context": {"subject": "November news", "message": "Hello from Offload."},
                "filter": {"country": ["de"]},
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    campaign_id = response.json()["id"]

    progress: list[int] = []

    def finished():
        job = Job.objects.get(id=campaign_id)
        if job.progress_current is not None:
            progress.append(job.progress_current)
        return job if job.is_finished else None

    job = wait_for(finished, timeout=240, interval=0.5, what="the campaign to finish")

    assert job.status == "succeeded", job.error
    assert job.result == {
        "contacts": CONTACTS,
        "sent": len(subscribed),
        "failed": 0,
        "skipped": UNSUBSCRIBED,
        "unknown": 0,
        "chunks": 20,
        "chunks_failed": 0,
    }
    counts = smtp.count()
    assert set(counts) == subscribed  # nobody unsubscribed, nobody outside the filter
    assert set(counts.values()) == {1}  # everyone once
    assert not unsubscribed & set(counts)
    assert job.progress_total == CONTACTS
    assert any(0 < value < CONTACTS for value in progress), "no progress over the campaign"
    children = Job.objects.filter(kind="email_campaign.chunk", params__campaign=campaign_id)
    assert children.count() == 20
    assert max(len(child.params["contacts"]) for child in children) == 100
    assert Counter(children.values_list("status", flat=True)) == {"succeeded": 20}

    times = sorted(message.at for message in smtp.messages())
    rate = (len(times) - 1) / (times[-1] - times[0])
    busiest = _max_in_window(times, 2.0)
    print(f"\ncampaign: {len(times)} messages at {rate:.1f}/s (limit {RATE:g}/s), "
          f"busiest 2 s window {busiest}")  # fmt: skip
    assert rate <= RATE * 1.10
    assert busiest <= 2 * RATE * 1.10
    assert rate >= RATE * 0.5, "far below the limit: the test measures nothing"

    # The unsubscribe link of one message, over real HTTP.
    message = smtp.messages("reader00100@example.org")[0].parsed()
    text = message.get_body(preferencelist=("plain",)).get_content()
    [link] = re.findall(r"http://\S+/unsubscribe/\S+", text)
    assert message["List-Unsubscribe"].strip() == f"<{link}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link in message.get_body(preferencelist=("html",)).get_content()
    assert link.startswith(web.url)
    contact = Contact.objects.get(email="reader00100@example.org")

    tampered = link[:-1] + ("A" if link[-1] != "A" else "B")
    assert httpx.post(tampered, timeout=10).status_code == 400
    # Another contact's id under this link's signature.
    _, signature = link.rsplit(":", 1)
    forged_payload = signing.b64_encode(f'{{"c":{contact.id + 1}}}'.encode()).decode()
    other = f"{web.url}/unsubscribe/{forged_payload}:{signature}"
    assert httpx.post(other, timeout=10).status_code == 400
    contact.refresh_from_db()
    assert contact.unsubscribed_at is None

    page = httpx.get(link, timeout=10)
    assert page.status_code == 200
    assert "<form" in page.text
    contact.refresh_from_db()
    assert contact.unsubscribed_at is None  # opening the link alone changes nothing
    done = httpx.post(link, timeout=10)
    assert done.status_code == 200
    assert "unsubscribed" in done.text
    contact.refresh_from_db()
    assert contact.unsubscribed_at is not None
    assert EmailSend.objects.filter(campaign_id=campaign_id, status="skipped").count() == (
        UNSUBSCRIBED
    )
