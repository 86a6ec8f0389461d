"""The send ledger and the rate limit, called directly against the database, with
Django's in-memory email backend (the path every non-SMTP backend takes)."""

import time
import uuid

import pytest
from django.core import mail
from django.test import override_settings

from jobs.models import Job
from notifications import email_rate
from notifications.email_messages import email_build
from notifications.email_sending import Outgoing, sends_deliver
from notifications.email_templates import email_render
from notifications.models import EmailSend

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("_locmem"),
]


@pytest.fixture
def _locmem():
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        yield


def _items(job_id, recipients):
    rendered = email_render(name="job_finished", context={"job_id": 1, "kind": "k", "status": "ok"})
    return [
        Outgoing(
            recipient=r, message=email_build(job_id=job_id, address=r, to=r, rendered=rendered)
        )
        for r in recipients
    ]


@pytest.fixture
def job():
    return Job.objects.create(id=uuid.uuid4(), kind="email", params={})


def test_a_second_run_sends_nothing_again(job):
    items = _items(job.id, ["a@example.org", "b@example.org"])
    first = sends_deliver(job_id=job.id, items=items)
    second = sends_deliver(job_id=job.id, items=items)

    assert first.sent == 2
    assert (second.sent, second.already) == (0, 2)
    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.org", "b@example.org"]


def test_a_pending_row_is_not_sent_again_and_becomes_unknown(job):
    EmailSend.objects.create(job=job, recipient="a@example.org", status="pending")
    counts = sends_deliver(job_id=job.id, items=_items(job.id, ["a@example.org", "b@example.org"]))

    assert counts.unknown == ["a@example.org"]
    assert [m.to[0] for m in mail.outbox] == ["b@example.org"]
    assert EmailSend.objects.get(job=job, recipient="a@example.org").status == "unknown"


def test_a_deferred_row_is_sent_on_the_next_run(job):
    EmailSend.objects.create(job=job, recipient="a@example.org", status="deferred", attempts=1)
    counts = sends_deliver(job_id=job.id, items=_items(job.id, ["a@example.org"]))

    assert counts.sent == 1
    row = EmailSend.objects.get(job=job, recipient="a@example.org")
    assert (row.status, row.attempts) == ("sent", 2)


def test_a_campaign_recipient_held_by_another_chunk_is_not_mailed(job):
    other = Job.objects.create(id=uuid.uuid4(), kind="email_campaign.chunk", params={})
    EmailSend.objects.create(job=other, campaign=job, recipient="a@example.org", status="sent")
    chunk = Job.objects.create(id=uuid.uuid4(), kind="email_campaign.chunk", params={})
    counts = sends_deliver(
        job_id=chunk.id,
        campaign_id=job.id,
        items=_items(job.id, ["a@example.org"]),
    )
    assert (counts.sent, counts.already) == (0, 1)
    assert mail.outbox == []


def test_the_rate_limit_spaces_slots_evenly():
    rate = 50.0
    email_rate.send_slot_wait(rate)  # the first slot is now
    started = time.monotonic()
    for _ in range(10):
        email_rate.send_slot_wait(rate)
    elapsed = time.monotonic() - started
    assert elapsed >= 10 / rate * 0.9
