"""The `email` kind through a real worker to a real SMTP server (aiosmtpd): parts and
headers, 4xx retried, 5xx failed without retry, and a worker killed after the SMTP
transaction that sends nothing twice."""

import os
import signal
import socket
import uuid

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from config.celery_app import app
from jobs.models import FilePurpose, Job, StoredFile
from notifications.models import EmailSend
from tests.smtp import SmtpServer
from tests.support import Worker, process_env, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mail_worker(worker, django_db_blocker, log_dir, smtp):
    """A worker whose Django email backend is the test's SMTP server; the session worker
    stops consuming meanwhile, so only this one runs the jobs."""
    name = worker.name.replace("%h", socket.gethostname())
    queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
    for queue in queues:
        app.control.cancel_consumer(queue, destination=[name], reply=True)
    with django_db_blocker.unblock():
        queues_purge()
    env = process_env(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port))
    process = Worker(log_dir=log_dir, env=env, concurrency=1).start()
    yield process
    process.stop()
    with django_db_blocker.unblock():
        queues_purge()
    for queue in queues:
        app.control.add_consumer(queue, destination=[name], reply=True)


@pytest.fixture
def server(smtp):
    smtp.reset()
    yield smtp
    smtp.reset()


def _submit(client, params) -> str:
    response = client.post("/api/v1/jobs", {"kind": "email", "params": params}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _final(job_id) -> Job:
    return wait_for(
        lambda: Job.objects.filter(id=job_id, status__in=["succeeded", "failed", "dead"]).first(),
        timeout=60,
        what=f"job {job_id} to finish",
    )


def test_each_recipient_gets_one_message_with_text_html_and_headers(mail_worker, server, api):
    job_id = _submit(
        api,
        {
            "template": "reminder",
            "to": ["Ann Example <ann@example.org>", "bob@example.org"],
            "context": {"title": "Renew <now>", "message": "Fish & <chips>"},
        },
    )
    job = _final(job_id)

    assert job.status == "succeeded", job.error
    assert job.result["sent"] == 2
    assert server.count() == {"ann@example.org": 1, "bob@example.org": 1}
    ann = server.messages("ann@example.org")[0].parsed()
    assert ann["Subject"] == "Reminder: Renew <now>"
    assert ann["To"] == "Ann Example <ann@example.org>"
    assert "bob" not in ann["To"]
    assert ann["Cc"] is None
    assert ann["Bcc"] is None
    assert ann["From"] == settings.DEFAULT_FROM_EMAIL
    assert ann.get_content_type() == "multipart/alternative"
    text = ann.get_body(preferencelist=("plain",)).get_content()
    html = ann.get_body(preferencelist=("html",)).get_content()
    assert "Fish & <chips>" in text  # text is not HTML-escaped
    assert "Fish &amp; &lt;chips&gt;" in html  # HTML is
    rows = {row.recipient: row for row in EmailSend.objects.filter(job_id=job_id)}
    assert {r.status for r in rows.values()} == {"sent"}
    assert rows["ann@example.org"].smtp_code == 250
    assert rows["ann@example.org"].message_id == ann["Message-ID"]
    assert ann["Message-ID"].startswith(f"<{job_id}.")


def test_staff_attachment_arrives_with_its_name_and_type(mail_worker, server, staff_api):
    content = b"%PDF-1.4\n% a tiny report\n"
    name = f"reports/test-{uuid.uuid4().hex}.pdf"
    default_storage.save(name, ContentFile(content))
    stored = StoredFile.objects.create(
        purpose=FilePurpose.UPLOAD,
        storage_name=name,
        content_type="application/pdf",
        size=len(content),
        sha256="0" * 64,
    )
    job_id = _submit(
        staff_api,
        {
            "template": "daily_report",
            "to": ["ops@example.org"],
            "context": {"date": "2026-11-24"},
            "attachments": [str(stored.id)],
        },
    )
    try:
        job = _final(job_id)
    finally:
        default_storage.delete(name)

    assert job.status == "succeeded", job.error
    message = server.messages("ops@example.org")[0].parsed()
    assert message["Subject"] == "Offload daily job report for 2026-11-24"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == os.path.basename(name)
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == content
    assert "2026-11-24" in message.get_body(preferencelist=("plain",)).get_content()


def test_451_then_250_delivers_once_after_a_retry(mail_worker, server, api):
    server.reset(
        reply=lambda phase, rcpt, n: (
            "451 4.3.0 Try again later" if (phase, n) == ("DATA", 1) else None
        )
    )
    job_id = _submit(
        api, {"template": "reminder", "to": ["later@example.org"], "context": {"message": "hi"}}
    )
    job = _final(job_id)

    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert server.count() == {"later@example.org": 1}
    assert server.seen[("DATA", "later@example.org")] == 2
    row = EmailSend.objects.get(job_id=job_id)
    assert (row.status, row.smtp_code, row.attempts) == ("sent", 250, 2)


def test_550_fails_the_recipient_without_a_retry(mail_worker, server, api):
    server.reset(
        reply=lambda phase, rcpt, n: (
            "550 5.1.1 No such user here" if rcpt.startswith("nobody") else None
        )
    )
    both = _submit(
        api,
        {"template": "reminder", "to": ["nobody@example.org", "real@example.org"],
         "context": {"message": "hi"}},
    )  # fmt: skip
    job = _final(both)
    assert job.status == "succeeded", job.error
    assert job.attempts == 1
    assert job.result["sent"] == 1
    assert job.result["failed"] == [
        {"to": "nobody@example.org", "code": 550, "reply": "5.1.1 No such user here"}
    ]
    assert server.count() == {"real@example.org": 1}
    assert server.seen[("RCPT", "nobody@example.org")] == 1

    alone = _submit(
        api, {"template": "reminder", "to": ["nobody@example.org"], "context": {"message": "hi"}}
    )
    job = _final(alone)
    assert job.status == "failed"
    assert job.attempts == 1
    assert job.error["retryable"] is False
    assert "550" in job.error["message"]
    assert "No such user" in job.error["message"]
    assert server.seen[("RCPT", "nobody@example.org")] == 2  # once per job: no retry
    assert EmailSend.objects.get(job_id=alone).status == "failed"


def test_worker_killed_after_the_smtp_transaction_sends_nothing_twice(mail_worker, server, api):
    recipients = ["one@example.org", "two@example.org", "three@example.org"]

    def kill_on_second(rcpt):
        if rcpt == "two@example.org" and server.seen[("DATA", rcpt)] == 1:
            # The server has the message; the worker dies before it hears the 250.
            for pid in mail_worker.children():
                os.kill(pid, signal.SIGKILL)

    server.reset(on_data=kill_on_second)
    job_id = _submit(api, {"template": "reminder", "to": recipients, "context": {"message": "hi"}})
    job = _final(job_id)

    assert job.status == "succeeded", job.error
    assert job.deliveries >= 2, "the job was not redelivered: the kill did not happen"
    assert server.count() == dict.fromkeys(recipients, 1)
    assert job.result["sent"] == 2
    assert job.result["unknown"] == ["two@example.org"]
    statuses = dict(EmailSend.objects.filter(job_id=job_id).values_list("recipient", "status"))
    assert statuses == {
        "one@example.org": "sent",
        "two@example.org": "unknown",
        "three@example.org": "sent",
    }


def test_template_broken_after_submit_fails_with_the_variable_and_sends_nothing(
    mail_worker, server, user
):
    # A job whose params skipped the submit's checks, as if the template changed since.
    from jobs import services

    job_id = uuid.uuid4()
    job = Job.objects.create(
        id=job_id,
        kind="email",
        owner=user,
        params={"template": "reminder", "to": ["x@example.org"], "context": {}},
        queue="notifications",
        celery_task_id=str(job_id),
    )
    services.jobs_dispatch(jobs=[job])
    final = _final(job_id)

    assert final.status == "failed"
    assert "uses message" in final.error["message"]
    assert final.attempts == 1
    assert server.count() == {}
    assert server.seen == {}
    assert not EmailSend.objects.filter(job_id=job_id).exists()
