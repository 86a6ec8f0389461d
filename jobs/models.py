"""The job record: the single source of truth a user sees about a piece of background work."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class JobStatus(models.TextChoices):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED}
)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="jobs",
        # job_owner_created (owner, -created_at) serves the owner lookups: no second index
        # to maintain on every status write.
        db_index=False,
        help_text="Empty for system jobs (schedules, maintenance).",
    )
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    version = models.PositiveIntegerField(default=1, help_text="Bumped by every change.")
    priority = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(9)]
    )
    queue = models.CharField(max_length=64, default="default")

    progress_percent = models.FloatField(null=True, blank=True)
    progress_current = models.BigIntegerField(null=True, blank=True)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True, default="")

    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    # NULL, not "", means "no key": the unique constraint must ignore keyless jobs.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    callback_url = models.URLField(max_length=2000, blank=True, default="")

    run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    concurrency_key = models.CharField(
        max_length=200, blank=True, default="", help_text="Jobs sharing a key share a limit."
    )
    held = models.BooleanField(
        default=False, help_text="Queued but not yet sent: its concurrency key is at its limit."
    )
    history = models.JSONField(
        default=list, blank=True, help_text="Earlier runs of a requeued job: status and error."
    )
    request_id = models.CharField(
        max_length=64, blank=True, default="", help_text="The API request that submitted it."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
            models.Index(fields=["status", "kind"], name="job_status_kind"),
            models.Index(
                fields=["concurrency_key", "created_at"],
                name="job_concurrency_key",
                condition=~models.Q(concurrency_key=""),
            ),
            # The delayed-job dispatcher polls this twice a second.
            models.Index(
                fields=["run_at"],
                name="job_scheduled_run_at",
                condition=models.Q(status="scheduled"),
            ),
            # Cleanup finds old finished jobs per status.
            models.Index(fields=["status", "finished_at"], name="job_status_finished"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="job_owner_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", "skip: a slot whose previous run still holds the lease is skipped"
    ALLOW = "allow", "allow: runs may overlap (the newer run takes the lease)"


class ScheduleConfig(models.Model):
    """Offload's options for one django-celery-beat periodic task."""

    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="offload_config",
    )
    overlap = models.CharField(
        max_length=8, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    managed_hash = models.CharField(
        max_length=64,
        blank=True,
        default="",
        editable=False,
        help_text="What setup_periodic_tasks last wrote; another value means an admin edited it.",
    )

    class Meta:
        verbose_name = "Offload schedule options"
        verbose_name_plural = "Offload schedule options"

    def __str__(self) -> str:
        return f"{self.periodic_task_id}: overlap {self.overlap}"


class SlotOutcome(models.TextChoices):
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class ScheduleSlot(models.Model):
    """One claimed slot of one schedule. The unique (schedule, due_at) row is taken before
    anything is sent, so a second claim of the same slot (another beat, a restart, an edit)
    inserts nothing and sends nothing."""

    schedule = models.CharField(max_length=200)
    due_at = models.DateTimeField()
    claimed_at = models.DateTimeField(auto_now_add=True)
    claimed_by = models.CharField(max_length=255, blank=True, default="")
    outcome = models.CharField(max_length=8, choices=SlotOutcome.choices)
    detail = models.CharField(max_length=500, blank=True, default="")
    job_id = models.UUIDField(null=True, blank=True)
    token = models.BigIntegerField(null=True, blank=True, help_text="The lease's fencing token.")

    class Meta:
        ordering = ["-due_at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "due_at"], name="schedule_slot_once"),
        ]
        indexes = [models.Index(fields=["claimed_at"], name="schedule_slot_claimed")]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.due_at.isoformat()} ({self.outcome})"


class ScheduleLease(models.Model):
    """Which run of a schedule holds it now. `token` grows by one for every new holder (the
    fencing token); the holder's heartbeat pushes `expires_at` forward."""

    schedule = models.CharField(max_length=200, primary_key=True)
    token = models.BigIntegerField(default=0)
    job_id = models.UUIDField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.schedule}: job {self.job_id} token {self.token}"


class BeatLease(models.Model):
    """The beat leader: only the holder of the unexpired lease sends."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=255)
    token = models.BigIntegerField(default=1)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} until {self.expires_at.isoformat()}"


class FilePurpose(models.TextChoices):
    UPLOAD = "upload"
    THUMBNAIL = "thumbnail"
    IMPORT_REPORT = "import_report"
    REPORT = "report"


class StoredFile(models.Model):
    """A file kept in Django's default storage on behalf of a user: an upload that job
    params name, or a file a job produced (a thumbnail, an import's error report).

    Files are private to their owner. `storage_name` is unique, so a job that writes the
    same output again (a redelivery) updates its row instead of adding one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # storedfile_owner_created serves the owner lookups (see Meta).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="stored_files",
        db_index=False,
    )
    purpose = models.CharField(max_length=32, choices=FilePurpose.choices)
    storage_name = models.CharField(max_length=500)
    original_name = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=100, help_text="Decided from the content.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="files",
        help_text="The job that produced it (empty for uploads).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Every job output inserts (or, redelivered, rewrites) a row here, and each index
        # costs an insert: only the ones a query reads. A unique constraint, not
        # `unique=True`, so PostgreSQL gets no `varchar_pattern_ops` copy nothing reads.
        constraints = [
            models.UniqueConstraint(fields=["storage_name"], name="storedfile_storage_name_unique"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="storedfile_owner_created"),
            models.Index(fields=["purpose", "created_at"], name="storedfile_purpose_created"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.storage_name}"
