"""`email`: one templated email to one or more recipients.

Params: `template` (a template name, see notifications/email_templates.py), `to` (1 to
OFFLOAD_EMAIL_MAX_RECIPIENTS addresses, `a@x.org` or `Name <a@x.org>`), `context` (the
template's variables; `recipient` is added, the bare address of each recipient) and
`attachments` (ids of `jobs.StoredFile` rows, attached under their file name with their
content type; staff and system jobs only: a non-staff owner gets a 400, so no user can mail
out another user's files).

Everything that can be checked is checked at submit (a 400): the template exists and
compiles, every variable it uses is in the context, the subject stays one line, every
address is valid, the list is not too long, the attachments exist and fit
OFFLOAD_EMAIL_MAX_ATTACHMENTS / OFFLOAD_EMAIL_MAX_ATTACHMENT_BYTES. The run renders every
message before it sends the first, so a template that broke since the submit fails the job
with nothing sent.

Each recipient gets their own message, sent through Django's email backend. Delivery
guarantee: **at most once per (job, recipient)**, through the send ledger
(`notifications.EmailSend`, see notifications/email_sending.py): a retried or redelivered
job never sends again to a recipient who got the message, and a recipient whose SMTP
transaction was cut by a lost worker is reported as `unknown` instead of being sent twice.
SMTP 4xx, timeouts and refused connections retry with exponential backoff
(OFFLOAD_EMAIL_MAX_ATTEMPTS, OFFLOAD_EMAIL_RETRY_BACKOFF); a 5xx or an invalid address fails
that recipient with the server's reply, without a retry. The job fails when no recipient
got the message and at least one was refused. Result: `{"sent", "failed": [{"to", "code",
"reply"}], "unknown": [...], "recipients"}`, read from the ledger.
"""

from typing import Any

from django.conf import settings
from rest_framework import serializers

from jobs.models import StoredFile
from jobs.registry import RetryPolicy, job_kind
from jobs.runtime import JobRun
from notifications import email_sending
from notifications.email_messages import (
    RecipientError,
    attachments_load,
    email_build,
    recipient_parse,
)
from notifications.email_sending import EmailError, EmailTransientError, Outgoing
from notifications.email_templates import EmailTemplateError, email_render, template_check
from notifications.models import EmailSend, EmailSendStatus

EMAIL_RETRY = RetryPolicy(
    on=(EmailTransientError,),
    max_attempts=settings.OFFLOAD_EMAIL_MAX_ATTEMPTS,
    backoff=settings.OFFLOAD_EMAIL_RETRY_BACKOFF,
    backoff_max=settings.OFFLOAD_EMAIL_RETRY_MAX,
)


class EmailParams(serializers.Serializer):
    template = serializers.CharField(max_length=64, help_text="An email template name.")
    to = serializers.ListField(
        child=serializers.CharField(max_length=320, trim_whitespace=False),
        min_length=1,
        help_text="Addresses: `a@x.org` or `Name <a@x.org>`.",
    )
    context = serializers.DictField(required=False, default=dict)
    attachments = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        help_text="Staff only: ids of stored files to attach.",
    )

    def validate_template(self, value: str) -> str:
        _template_check(value)
        return value

    def validate_to(self, value: list[str]) -> list[str]:
        limit = settings.OFFLOAD_EMAIL_MAX_RECIPIENTS
        if len(value) > limit:
            raise serializers.ValidationError(
                f"{len(value)} recipients is over the limit of {limit}; "
                "send to a larger audience with an email_campaign."
            )
        errors, seen, cleaned = {}, set(), []
        for index, entry in enumerate(value):
            try:
                address, formatted = recipient_parse(entry)
            except RecipientError as exc:
                errors[index] = [str(exc)]
                continue
            if address not in seen:
                seen.add(address)
                cleaned.append(formatted)
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned

    def validate_attachments(self, value: list) -> list[str]:
        if not value:
            return []
        owner = self.context.get("owner")
        if owner is not None and not owner.is_staff:
            raise serializers.ValidationError(
                "only staff may attach stored files to an email; leave attachments out."
            )
        if len(value) > settings.OFFLOAD_EMAIL_MAX_ATTACHMENTS:
            raise serializers.ValidationError(
                f"at most {settings.OFFLOAD_EMAIL_MAX_ATTACHMENTS} attachments"
            )
        ids = [str(v) for v in value]
        found = dict(StoredFile.objects.filter(id__in=ids).values_list("id", "size"))
        missing = [i for i in ids if i not in {str(k) for k in found}]
        if missing:
            raise serializers.ValidationError(f"no stored file {', '.join(missing[:5])}")
        total = sum(found.values())
        if total > settings.OFFLOAD_EMAIL_MAX_ATTACHMENT_BYTES:
            raise serializers.ValidationError(
                f"the attachments are {total} bytes; the limit is "
                f"{settings.OFFLOAD_EMAIL_MAX_ATTACHMENT_BYTES} bytes"
            )
        return ids

    def validate(self, attrs: dict) -> dict:
        for entry in attrs["to"]:
            address, _ = recipient_parse(entry)
            _render(attrs["template"], attrs["context"], address)
        return attrs


def _template_check(name: str) -> None:
    try:
        template_check(name)
    except EmailTemplateError as exc:
        raise serializers.ValidationError(exc.message) from None


def _render(name: str, context: dict[str, Any], address: str) -> Any:
    try:
        return email_render(name=name, context={**context, "recipient": address})
    except EmailTemplateError as exc:
        raise serializers.ValidationError({"context": [exc.message]}) from None


def email_outgoing(job_id: Any, params: dict[str, Any]) -> list[Outgoing]:
    """Every message, rendered before the first is sent."""
    attachments = attachments_load(params.get("attachments") or [])
    items = []
    for entry in params["to"]:
        address, formatted = recipient_parse(entry)
        rendered = email_render(
            name=params["template"], context={**params.get("context", {}), "recipient": address}
        )
        message = email_build(
            job_id=job_id, address=address, to=formatted, rendered=rendered, attachments=attachments
        )
        items.append(Outgoing(recipient=address, message=message))
    return items


def ledger_result(job_id: Any) -> dict[str, Any]:
    rows = EmailSend.objects.filter(job_id=job_id).order_by("id")
    result: dict[str, Any] = {"recipients": 0, "sent": 0, "failed": [], "unknown": []}
    for row in rows:
        result["recipients"] += 1
        if row.status == EmailSendStatus.SENT:
            result["sent"] += 1
        elif row.status == EmailSendStatus.FAILED:
            result["failed"].append(
                {"to": row.recipient, "code": row.smtp_code, "reply": row.smtp_reply}
            )
        elif row.status == EmailSendStatus.UNKNOWN:
            result["unknown"].append(row.recipient)
    return result


@job_kind(
    "email",
    params=EmailParams,
    queue="notifications",
    priority=5,
    retry=EMAIL_RETRY,
    soft_time_limit=600,
    time_limit=660,
    idempotent=True,
)
def email_send(job: JobRun) -> dict:
    """Send one templated email to each recipient, at most once each (a send ledger)."""
    try:
        items = email_outgoing(job.id, job.params)
    except EmailTemplateError as exc:
        raise EmailError(exc.message) from None
    except FileNotFoundError as exc:
        raise EmailError(f"Nothing was sent: {exc}.") from None
    email_sending.sends_deliver(
        job_id=job.id, items=items, on_step=lambda done, total: job.progress(done, total)
    )
    result = ledger_result(job.id)
    if result["failed"] and not result["sent"] and not result["unknown"]:
        refused = "; ".join(f"{f['to']}: {f['code'] or ''} {f['reply']}" for f in result["failed"])
        raise EmailError(f"No recipient accepted the message: {refused}"[:2000])
    return result
