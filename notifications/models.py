import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Contact(models.Model):
    """A person Offload can write to: the target of CSV imports and email campaigns."""

    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    phone = models.CharField(max_length=50, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    # Database defaults too: an import's COPY leaves both out, so no timestamp is parsed
    # per row and the rows of one statement share it (contact_writers.py relies on that).
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        ordering = ["email"]
        # Declared as a constraint and an index rather than `unique=True`/`db_index=True`:
        # on PostgreSQL those add a second `varchar_pattern_ops` index per column for
        # `LIKE 'x%'` lookups nothing here makes, and every import pays for each index.
        constraints = [models.UniqueConstraint(fields=["email"], name="contact_email_unique")]
        indexes = [models.Index(fields=["country"], name="contact_country_idx")]

    def __str__(self) -> str:
        return self.email


class SigningSecret(models.Model):
    """A `whsec_` secret with its predecessor, valid until the end of a rotation's grace
    period: while both are valid every delivery carries both signatures."""

    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True, default="")
    previous_valid_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class Endpoint(SigningSecret):
    """A URL a user registered to receive signed webhooks for some event types."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    event_types = models.JSONField(default=list, help_text="e.g. job.succeeded, job.failed")
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "enabled"], name="endpoint_owner_enabled")]

    def __str__(self) -> str:
        return self.url


class CallbackSecret(SigningSecret):
    """The secret that signs deliveries to jobs' own `callback_url`s, one per user."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="callback_secret"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"callback secret of {self.owner}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Delivery(models.Model):
    """One webhook message to one URL, with every attempt to send it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # delivery_owner_created serves the owner lookups (see Meta).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
        db_index=False,
    )
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    url = models.CharField(max_length=2000)
    event_type = models.CharField(max_length=50)
    message_id = models.CharField(max_length=64, help_text="The webhook-id header.")
    # One delivery per (job version, target): a repeated event queues nothing twice.
    dedupe_key = models.CharField(max_length=200)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_latency_ms = models.FloatField(null=True, blank=True)
    log = models.JSONField(
        default=list, blank=True, help_text="Every attempt: request, response status, latency."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        # Every attempt rewrites the row's status, which PostgreSQL cannot do in place
        # (status is indexed), so each index here costs an insert per attempt: only the
        # ones a query uses. Unique constraints, not `unique=True`, so PostgreSQL gets no
        # second `varchar_pattern_ops` index nothing reads.
        constraints = [
            models.UniqueConstraint(fields=["message_id"], name="delivery_message_id_unique"),
            models.UniqueConstraint(fields=["dedupe_key"], name="delivery_dedupe_key_unique"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="delivery_owner_created"),
            # The sweeper's due and stale deliveries; finished ones never enter it.
            models.Index(
                fields=["status", "next_attempt_at"],
                name="delivery_due",
                condition=models.Q(status__in=["pending", "sending", "retrying"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.url} ({self.status})"


class EmailSendStatus(models.TextChoices):
    PENDING = "pending", "pending: written before the SMTP transaction"
    SENT = "sent", "sent: the server accepted the message"
    DEFERRED = "deferred", "deferred: the server answered 4xx; a retry sends it"
    FAILED = "failed", "failed: refused for good (5xx, bad address, template)"
    SKIPPED = "skipped", "skipped: the contact unsubscribed"
    UNKNOWN = "unknown", "unknown: the worker died during the transaction; not resent"


class EmailSend(models.Model):
    """The send ledger: one row per (job, recipient), written `pending` before the SMTP
    transaction and `sent` (or `failed`, `deferred`) after it, so a retried or redelivered
    job never mails a recipient twice. A campaign's rows also carry the campaign job: one
    row per (campaign, recipient), whichever chunk job wrote it."""

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="email_sends")
    campaign = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="email_sends"
    )
    recipient = models.CharField(max_length=254)
    status = models.CharField(max_length=16, choices=EmailSendStatus.choices)
    smtp_code = models.PositiveSmallIntegerField(null=True, blank=True)
    smtp_reply = models.CharField(max_length=500, blank=True, default="")
    message_id = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "recipient"], name="email_send_once_per_job"),
            models.UniqueConstraint(
                fields=["campaign", "recipient"],
                condition=models.Q(campaign__isnull=False),
                name="email_send_once_per_campaign",
            ),
        ]
        indexes = [models.Index(fields=["campaign", "status"], name="email_send_campaign")]

    def __str__(self) -> str:
        return f"{self.recipient} ({self.status})"


class SendRate(models.Model):
    """The shared sending rate limit: the earliest time the next message may go out. Every
    worker reserves its slot with one atomic statement (see notifications/email_rate.py)."""

    name = models.CharField(max_length=64, primary_key=True)
    next_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: next at {self.next_at.isoformat()}"
