"""Sending email once: the send ledger around each SMTP transaction.

For every recipient of a job a ledger row (`EmailSend`) is written `pending` before the
SMTP transaction starts and `sent`, `failed` or `deferred` after the server's reply. A
retried or redelivered job reads the ledger first:

- `sent`, `failed`, `skipped`, `unknown`: done, never sent again;
- `deferred` (the server answered 4xx, or the connection failed before DATA): sent again;
- `pending`: an earlier run died between writing the row and recording the reply, so the
  server may have accepted the message. It is marked `unknown` and NOT sent again.

The guarantee is therefore **at most once per (job, recipient)**: a message is never
delivered twice by Offload (the Message-ID is also the same on every attempt,
`<job id>.<recipient hash>@<domain>`, so receivers can dedupe); a worker killed during the
SMTP transaction may lose that one message, which the job's result lists as `unknown`.

Replies: 2xx is sent; 4xx (and timeouts, refused or dropped connections before DATA) is
transient: the row is `deferred` and the job retries with backoff; 5xx is permanent: the
row is `failed` with the server's reply and is not retried. A connection lost after DATA
was sent leaves the outcome unknown (`unknown`, not retried).

Only Django's SMTP backend (and subclasses) is driven command by command; any other
backend (console in the quickstart, locmem) is called through `send_messages`.
"""

import hashlib
import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.core.mail.message import sanitize_address
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifications import email_rate
from notifications.models import EmailSend, EmailSendStatus

logger = logging.getLogger(__name__)
DONE = {
    EmailSendStatus.SENT,
    EmailSendStatus.FAILED,
    EmailSendStatus.SKIPPED,
    EmailSendStatus.UNKNOWN,
}


class EmailTransientError(Exception):
    """The SMTP server or the network failed in a way that can succeed later: retried."""


class EmailError(Exception):
    """The job cannot send (every recipient refused, a configuration error): not retried."""


@dataclass
class Outgoing:
    """One message to one recipient, or why it cannot be built (`error`)."""

    recipient: str  # the bare address: the ledger key
    message: EmailMultiAlternatives | None = None
    contact_id: int | None = None
    error: str = ""


@dataclass
class Outcome:
    status: str
    code: int | None = None
    reply: str = ""


@dataclass
class Counts:
    sent: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    unknown: list[str] = field(default_factory=list)
    already: int = 0

    def as_result(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "unknown": self.unknown,
            "already_done": self.already,
        }


def message_id(*, job_id: Any, recipient: str) -> str:
    """The same on every attempt for one (job, recipient), so receivers can dedupe."""
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip("> ") or "offload.invalid"
    return f"<{job_id}.{digest}@{domain}>"


def _reply(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:500]


def _classify(code: int, reply: Any) -> Outcome:
    if 200 <= code < 300:
        return Outcome(EmailSendStatus.SENT, code, _reply(reply))
    if 400 <= code < 500:
        return Outcome(EmailSendStatus.DEFERRED, code, _reply(reply))
    return Outcome(EmailSendStatus.FAILED, code, _reply(reply))


class Transport:
    """One connection through Django's configured email backend, reused for a job's
    messages and reopened after an error."""

    def __init__(self) -> None:
        self.backend = get_connection(fail_silently=False)
        self.smtp = isinstance(self.backend, SmtpBackend)

    def close(self) -> None:
        try:
            self.backend.close()
        except (OSError, smtplib.SMTPException):
            self.backend.connection = None

    def _open(self) -> Outcome | None:
        try:
            self.backend.open()
        except smtplib.SMTPResponseException as exc:
            self.backend.connection = None
            if exc.smtp_code >= 500:
                raise EmailError(
                    f"The SMTP server refused the session: {exc.smtp_code} {_reply(exc.smtp_error)}"
                ) from exc
            return Outcome(EmailSendStatus.DEFERRED, exc.smtp_code, _reply(exc.smtp_error))
        except OSError as exc:
            self.backend.connection = None
            return Outcome(EmailSendStatus.DEFERRED, None, f"cannot connect: {exc}"[:500])
        return None

    def send(self, message: EmailMultiAlternatives, recipient: str) -> Outcome:
        if not self.smtp:
            try:
                self.backend.send_messages([message])
            except Exception as exc:  # any backend's own errors: recorded, never retried
                return Outcome(EmailSendStatus.FAILED, None, f"{type(exc).__name__}: {exc}")
            return Outcome(EmailSendStatus.SENT, None, "accepted by the email backend")
        failed = self._open()
        if failed is not None:
            return failed
        conn = self.backend.connection
        encoding = message.encoding or settings.DEFAULT_CHARSET
        body = message.message().as_bytes(linesep="\r\n")
        data_sent = False
        try:
            conn.ehlo_or_helo_if_needed()
            code, reply = conn.mail(sanitize_address(message.from_email, encoding))
            if code != 250:
                conn.rset()
                return _classify(code, reply)
            code, reply = conn.rcpt(sanitize_address(recipient, encoding))
            if code not in (250, 251):
                conn.rset()
                return _classify(code, reply)
            data_sent = True
            code, reply = conn.data(body)
        except smtplib.SMTPDataError as exc:
            # The DATA command itself was refused: nothing was transferred.
            self._rset()
            return _classify(exc.smtp_code, exc.smtp_error)
        except OSError as exc:  # smtplib's errors, timeouts, resets
            self.close()
            if data_sent:
                return Outcome(EmailSendStatus.UNKNOWN, None, f"connection lost during DATA: {exc}")
            return Outcome(EmailSendStatus.DEFERRED, None, f"connection failed: {exc}"[:500])
        if code >= 300:
            self._rset()
        return _classify(code, reply)

    def _rset(self) -> None:
        try:
            self.backend.connection.rset()
        except (OSError, AttributeError):
            self.close()


def _ledger_claim(
    *, job_id: Any, campaign_id: Any, item: Outgoing, existing: EmailSend | None
) -> EmailSend | None:
    """Write the row `pending` (a new row, or a deferred one again). None: someone else's
    row (another chunk of the campaign) already holds this recipient."""
    if existing is not None:
        moved = EmailSend.objects.filter(id=existing.id, status=EmailSendStatus.DEFERRED).update(
            status=EmailSendStatus.PENDING, updated_at=timezone.now()
        )
        return existing if moved else None
    try:
        with transaction.atomic():
            return EmailSend.objects.create(
                job_id=job_id,
                campaign_id=campaign_id,
                contact_id=item.contact_id,
                recipient=item.recipient,
                status=EmailSendStatus.PENDING,
                message_id=item.message.extra_headers.get("Message-ID", "") if item.message else "",
            )
    except IntegrityError:
        return None


def _ledger_record(row: EmailSend, outcome: Outcome) -> None:
    EmailSend.objects.filter(id=row.id).update(
        status=outcome.status,
        smtp_code=outcome.code,
        smtp_reply=outcome.reply[:500],
        attempts=row.attempts + 1,
        updated_at=timezone.now(),
    )


def sends_skip(*, job_id: Any, campaign_id: Any, recipients: Sequence[tuple[str, int]]) -> None:
    """Record unsubscribed contacts as skipped (nothing is sent to them)."""
    EmailSend.objects.bulk_create(
        [
            EmailSend(
                job_id=job_id,
                campaign_id=campaign_id,
                contact_id=contact_id,
                recipient=recipient,
                status=EmailSendStatus.SKIPPED,
                smtp_reply="unsubscribed",
            )
            for recipient, contact_id in recipients
        ],
        ignore_conflicts=True,
    )


def sends_deliver(
    *, job_id: Any, items: Sequence[Outgoing], campaign_id: Any = None, on_step: Any = None
) -> Counts:
    """Send each message at most once, recording every outcome in the ledger. Raises
    EmailTransientError after recording a deferred recipient (the job retries and sends the
    rest); `on_step(done, total)` is called after each recipient."""
    counts = Counts()
    rows = {row.recipient: row for row in EmailSend.objects.filter(job_id=job_id)}
    transport = Transport()
    deferred: Outcome | None = None
    try:
        for index, item in enumerate(items, start=1):
            row = rows.get(item.recipient)
            if row is not None and row.status in DONE:
                counts.already += 1
                continue
            if row is not None and row.status == EmailSendStatus.PENDING:
                # An earlier run died during this recipient's transaction: at most once.
                _ledger_record(row, Outcome(EmailSendStatus.UNKNOWN, None, "worker lost"))
                counts.unknown.append(item.recipient)
                continue
            claimed = _ledger_claim(job_id=job_id, campaign_id=campaign_id, item=item, existing=row)
            if claimed is None:
                counts.already += 1
                continue
            if item.message is None:
                outcome = Outcome(EmailSendStatus.FAILED, None, item.error)
            else:
                email_rate.send_slot_wait()
                outcome = transport.send(item.message, item.recipient)
            _ledger_record(claimed, outcome)
            if outcome.status == EmailSendStatus.SENT:
                counts.sent += 1
            elif outcome.status == EmailSendStatus.UNKNOWN:
                counts.unknown.append(item.recipient)
            elif outcome.status == EmailSendStatus.FAILED:
                counts.failed.append(
                    {"to": item.recipient, "code": outcome.code, "reply": outcome.reply}
                )
            else:
                deferred = outcome
                break
            if on_step is not None:
                on_step(index, len(items))
    finally:
        transport.close()
    if deferred is not None:
        raise EmailTransientError(
            f"SMTP transient failure, will retry: {deferred.code or ''} {deferred.reply}".strip()
        )
    return counts
