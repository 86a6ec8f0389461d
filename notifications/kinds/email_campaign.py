"""`email_campaign`: a templated newsletter to every contact matching a filter.

Who may run it: **staff only** (and system jobs, e.g. a schedule). A campaign mails
addresses the sender did not type and can reach every contact in the database, so it is
an operator's tool, like the maintenance kinds; any user may still send `email` jobs to
addresses they name.

Params: `template`, `context` (shared variables; each message adds `contact` with
`email`, `first_name`, `last_name`, `country`, `attributes`, plus `recipient` and
`unsubscribe_url`) and `filter`: `country` (two-letter codes) and `attributes` (exact
values that a contact's attributes must hold), both optional (no filter: every contact).

How it runs:
- The campaign job selects the contacts, records every unsubscribed one as `skipped` in
  the send ledger (`Contact.unsubscribed_at` set: never mailed), and fans the others out
  in chunks of OFFLOAD_EMAIL_CAMPAIGN_CHUNK contact ids as child jobs of the staff-only
  kind `email_campaign.chunk` (system jobs on the notifications queue; `campaign` and
  `index` in their params name their parent, since jobs have no parent field), so no job
  holds thousands of addresses. A redelivered campaign submits only the chunks it has not
  submitted yet.
- It then follows its chunks, reporting progress over the whole campaign (messages done
  out of contacts) until every chunk is finished; cancelling the campaign cancels its
  unfinished chunks. Its result: `{"contacts", "sent", "failed", "skipped", "unknown",
  "chunks", "chunks_failed"}`, counted from the ledger.
- Every message carries a signed unsubscribe link (`unsubscribe_url` in the template; a
  footer with it is appended to a body that does not show it) and `List-Unsubscribe` /
  `List-Unsubscribe-Post` headers. A contact who unsubscribes while the campaign runs is
  skipped by chunks that have not reached them yet.
- Sending honours OFFLOAD_EMAIL_RATE_LIMIT across all workers (notifications/email_rate.py).

Guarantee: at most once per (campaign, contact address): the ledger's unique (campaign,
recipient) row is claimed before sending, whichever chunk holds the contact; the rest is
as for `email` (notifications/email_sending.py).
"""

import time
from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import serializers

from jobs import services as job_services
from jobs.errors import BrokerUnavailable, JobCancelled
from jobs.models import TERMINAL_STATUSES, Job, JobStatus
from jobs.registry import RetryPolicy, job_kind
from jobs.runtime import JobRun
from notifications import email_sending
from notifications.email_messages import email_build
from notifications.email_sending import EmailError, Outgoing
from notifications.email_templates import EmailTemplateError, email_render, template_check
from notifications.kinds.email import EMAIL_RETRY
from notifications.models import Contact, EmailSend, EmailSendStatus
from notifications.unsubscribe import unsubscribe_url

CHUNK_KIND = "email_campaign.chunk"
CHUNK_MAX = 1000


class CampaignFilter(serializers.Serializer):
    country = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z]{2}$", max_length=2),
        required=False,
        max_length=300,
        help_text="Two-letter country codes.",
    )
    attributes = serializers.DictField(
        required=False, help_text="Exact values the contact's attributes must hold."
    )


class CampaignParams(serializers.Serializer):
    template = serializers.CharField(max_length=64)
    context = serializers.DictField(required=False, default=dict)
    filter = CampaignFilter(required=False, default=dict)

    def validate(self, attrs: dict) -> dict:
        try:
            template_check(attrs["template"])
            email_render(name=attrs["template"], context=_context(attrs["context"], _SAMPLE))
        except EmailTemplateError as exc:
            raise serializers.ValidationError({"template": [exc.message]}) from None
        raw = self.initial_data.get("filter") if isinstance(self.initial_data, dict) else None
        unknown = set(raw if isinstance(raw, dict) else {}) - {"country", "attributes"}
        if unknown:
            raise serializers.ValidationError({"filter": [f"unknown keys {sorted(unknown)}"]})
        return attrs


class _AnyAttributes(dict):
    """A sample contact's attributes at submit: any attribute renders as empty."""

    def __missing__(self, key: str) -> str:
        return ""


_SAMPLE = {
    "id": 0,
    "email": "someone@example.org",
    "first_name": "",
    "last_name": "",
    "country": "",
    "attributes": _AnyAttributes(),
}


def _context(shared: dict[str, Any], contact: dict[str, Any]) -> dict[str, Any]:
    return {
        **shared,
        "contact": contact,
        "recipient": contact["email"],
        "unsubscribe_url": unsubscribe_url(contact["id"]),
    }


def contacts_matching(filters: dict[str, Any]) -> QuerySet[Contact]:
    contacts = Contact.objects.all()
    if filters.get("country"):
        contacts = contacts.filter(country__in=[c.upper() for c in filters["country"]])
    for key, value in (filters.get("attributes") or {}).items():
        contacts = contacts.filter(attributes__contains={key: value})
    return contacts.order_by("id")


def _chunks_submitted(campaign_id: Any) -> set[int]:
    return set(
        Job.objects.filter(kind=CHUNK_KIND, params__campaign=str(campaign_id)).values_list(
            "params__index", flat=True
        )
    )


def _fan_out(job: JobRun) -> int:
    contacts = contacts_matching(job.params.get("filter") or {})
    unsubscribed = contacts.filter(unsubscribed_at__isnull=False).values_list("email", "id")
    batch: list[tuple[str, int]] = []
    for row in unsubscribed.iterator(chunk_size=2000):
        batch.append(row)
        if len(batch) == 2000:
            email_sending.sends_skip(job_id=job.id, campaign_id=job.id, recipients=batch)
            batch = []
    if batch:
        email_sending.sends_skip(job_id=job.id, campaign_id=job.id, recipients=batch)
    ids = list(contacts.filter(unsubscribed_at__isnull=True).values_list("id", flat=True))
    size = min(settings.OFFLOAD_EMAIL_CAMPAIGN_CHUNK, CHUNK_MAX)
    done = _chunks_submitted(job.id)
    specs = [
        job_services.JobSpec(
            kind=CHUNK_KIND,
            params={"campaign": str(job.id), "index": index, "contacts": ids[start : start + size]},
        )
        for index, start in enumerate(range(0, len(ids), size))
        if index not in done
    ]
    for start in range(0, len(specs), settings.OFFLOAD_BULK_MAX):
        job_services.jobs_bulk_submit(
            specs=specs[start : start + settings.OFFLOAD_BULK_MAX], owner=None
        )
    return (len(ids) + size - 1) // size


def campaign_counts(campaign_id: Any) -> dict[str, int]:
    rows = Counter(
        EmailSend.objects.filter(campaign_id=campaign_id).values_list("status", flat=True)
    )
    return {status: rows.get(status, 0) for status in EmailSendStatus.values}


def _children(campaign_id: Any) -> QuerySet[Job]:
    return Job.objects.filter(kind=CHUNK_KIND, params__campaign=str(campaign_id))


@job_kind(
    "email_campaign",
    params=CampaignParams,
    queue="bulk",
    priority=3,
    # The broker refusing the chunks' messages: the fan-out is resumed by the retry.
    retry=RetryPolicy(on=(BrokerUnavailable,), max_attempts=5, backoff=5, backoff_max=120),
    staff_only=True,
    idempotent=True,
    soft_time_limit=7 * 24 * 3600,
    time_limit=7 * 24 * 3600 + 60,
)
def email_campaign(job: JobRun) -> dict:
    """Send a templated newsletter to the matching contacts, in chunks, once each."""
    total = contacts_matching(job.params.get("filter") or {}).count()
    chunks = _fan_out(job)
    while True:
        counts = campaign_counts(job.id)
        done = sum(counts.values()) - counts["pending"] - counts["deferred"]
        statuses = Counter(_children(job.id).values_list("status", flat=True))
        finished = sum(statuses[s] for s in TERMINAL_STATUSES)
        try:
            job.progress(done, max(total, done) or None, f"{finished} of {chunks} chunks done")
        except JobCancelled:
            for child in _children(job.id).exclude(status__in=TERMINAL_STATUSES):
                job_services.job_cancel(job=child)
            raise
        if finished >= chunks:
            break
        time.sleep(settings.OFFLOAD_EMAIL_CAMPAIGN_POLL)
    counts = campaign_counts(job.id)
    return {
        "contacts": total,
        "sent": counts["sent"],
        "failed": counts["failed"],
        "skipped": counts["skipped"],
        "unknown": counts["unknown"],
        "chunks": chunks,
        "chunks_failed": sum(statuses[s] for s in (JobStatus.FAILED, JobStatus.DEAD)),
    }


class ChunkParams(serializers.Serializer):
    campaign = serializers.UUIDField()
    index = serializers.IntegerField(min_value=0)
    contacts = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=CHUNK_MAX
    )


def _footer(rendered: Any, url: str) -> Any:
    from notifications.email_templates import Rendered

    text = rendered.text if url in rendered.text else f"{rendered.text}\n\nUnsubscribe: {url}\n"
    html = rendered.html
    if html is not None and url not in html:
        html = f'{html}\n<p><small><a href="{url}">Unsubscribe</a></small></p>'
    return Rendered(subject=rendered.subject, text=text, html=html)


def chunk_outgoing(job_id: Any, campaign: Job, contact_ids: list[int]) -> list[Outgoing]:
    """The chunk's messages (unsubscribed contacts are recorded as skipped, not built)."""
    shared = campaign.params.get("context") or {}
    items, skipped = [], []
    for contact in Contact.objects.filter(id__in=contact_ids).order_by("id"):
        if contact.unsubscribed_at is not None:
            skipped.append((contact.email, contact.id))
            continue
        data = {
            "id": contact.id,
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "country": contact.country,
            "attributes": contact.attributes,
        }
        context = _context(shared, data)
        try:
            rendered = _footer(
                email_render(name=campaign.params["template"], context=context),
                context["unsubscribe_url"],
            )
        except EmailTemplateError as exc:
            items.append(
                Outgoing(recipient=contact.email, contact_id=contact.id, error=exc.message)
            )
            continue
        url = context["unsubscribe_url"]
        message = email_build(
            job_id=campaign.id,
            address=contact.email,
            to=contact.email,
            rendered=rendered,
            headers={
                "List-Unsubscribe": f"<{url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        items.append(Outgoing(recipient=contact.email, message=message, contact_id=contact.id))
    if skipped:
        email_sending.sends_skip(job_id=job_id, campaign_id=campaign.id, recipients=skipped)
    return items


@job_kind(
    CHUNK_KIND,
    params=ChunkParams,
    queue="notifications",
    priority=3,
    retry=EMAIL_RETRY,
    staff_only=True,
    idempotent=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def email_campaign_chunk(job: JobRun) -> dict:
    """Send one chunk of an email campaign (started by the campaign job)."""
    campaign = Job.objects.filter(id=job.params["campaign"]).first()
    if campaign is None:
        raise EmailError(f"campaign {job.params['campaign']} no longer exists; nothing sent")
    if campaign.status == JobStatus.CANCELLED:
        return {"sent": 0, "cancelled": True}
    items = chunk_outgoing(job.id, campaign, job.params["contacts"])
    counts = email_sending.sends_deliver(
        job_id=job.id,
        campaign_id=campaign.id,
        items=items,
        on_step=lambda done, total: job.progress(done, total),
    )
    return counts.as_result()
