"""SMTP failures the server cannot script with a reply, through the sending service
against real sockets: a refused connection is transient (the recipient is deferred and
sent by the retry), a connection lost after DATA leaves the outcome unknown (never resent)."""

import asyncio
import uuid

import pytest
from django.test import override_settings

from jobs.models import Job
from notifications.email_messages import email_build
from notifications.email_sending import EmailTransientError, Outgoing, sends_deliver
from notifications.email_templates import email_render
from notifications.models import EmailSend
from tests.smtp import SmtpServer
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
# Django's test environment swaps in the in-memory backend; these tests need real SMTP.
SMTP = "django.core.mail.backends.smtp.EmailBackend"


def _items(job_id, recipient="a@example.org"):
    rendered = email_render(name="job_finished", context={"job_id": 1, "kind": "k", "status": "ok"})
    message = email_build(job_id=job_id, address=recipient, to=recipient, rendered=rendered)
    return [Outgoing(recipient=recipient, message=message)]


@pytest.fixture
def job():
    return Job.objects.create(id=uuid.uuid4(), kind="email", params={})


def test_refused_connection_defers_and_the_retry_sends(job):
    nobody = free_port()  # nothing listens there
    with (
        override_settings(EMAIL_BACKEND=SMTP, EMAIL_HOST="127.0.0.1", EMAIL_PORT=nobody),
        pytest.raises(EmailTransientError, match="cannot connect"),
    ):
        sends_deliver(job_id=job.id, items=_items(job.id))
    assert EmailSend.objects.get(job=job).status == "deferred"

    server = SmtpServer().start()
    try:
        with override_settings(EMAIL_BACKEND=SMTP, EMAIL_HOST="127.0.0.1", EMAIL_PORT=server.port):
            counts = sends_deliver(job_id=job.id, items=_items(job.id))
    finally:
        server.stop()
    assert counts.sent == 1
    assert server.count() == {"a@example.org": 1}


class _SlowServer(SmtpServer):
    async def handle_DATA(self, server, session, envelope):
        self._answer("DATA", envelope.rcpt_tos[0])
        await asyncio.sleep(3)  # longer than the client's timeout: the reply never arrives
        return "250 2.0.0 Message accepted for delivery"


def test_timeout_after_data_is_unknown_and_never_resent(job):
    server = _SlowServer().start()
    try:
        settings_ = {
            "EMAIL_BACKEND": SMTP,
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": server.port,
            "EMAIL_TIMEOUT": 1,
        }
        with override_settings(**settings_):
            first = sends_deliver(job_id=job.id, items=_items(job.id))
            second = sends_deliver(job_id=job.id, items=_items(job.id))
    finally:
        server.stop()
    assert first.unknown == ["a@example.org"]
    assert (second.sent, second.already) == (0, 1)
    assert server.seen[("DATA", "a@example.org")] == 1
    assert EmailSend.objects.get(job=job).status == "unknown"
