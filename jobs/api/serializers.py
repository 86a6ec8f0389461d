"""Request and response shapes of the jobs API."""

from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.reverse import reverse

from jobs.models import Job, JobStatus
from jobs.registry import json_type_errors
from jobs.services import JobSpec


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error, not a silent default."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["unknown field"] for name in unknown[:20]}
                )
            wrong_types = json_type_errors(self.fields, data)
            if wrong_types:
                raise serializers.ValidationError(wrong_types)
        return super().to_internal_value(data)


class JobSubmitSerializer(StrictSerializer):
    kind = serializers.CharField(max_length=100)
    params = serializers.JSONField(required=False, default=dict)
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False)
    callback_url = serializers.CharField(
        max_length=2000, required=False, default="", allow_blank=True
    )
    run_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Start at this time (ISO 8601 with offset), at most one year ahead.",
    )
    countdown = serializers.FloatField(
        required=False, allow_null=True, help_text="Start this many seconds from now."
    )

    def validate_callback_url(self, value: str) -> str:
        """http(s) only, never to this machine or a private literal address; names that
        resolve to private addresses are refused at delivery (notifications/outbound.py)."""
        from notifications.outbound import UnsafeURL, url_check

        if not value:
            return value
        try:
            return url_check(value)
        except UnsafeURL as exc:
            raise serializers.ValidationError(exc.message) from None

    def to_spec(self) -> JobSpec:
        data = self.validated_data
        return JobSpec(
            kind=data["kind"],
            params=data["params"],
            priority=data.get("priority"),
            callback_url=data["callback_url"],
            run_at=data.get("run_at"),
            countdown=data.get("countdown"),
        )


class JobBulkSubmitSerializer(StrictSerializer):
    jobs = serializers.ListField(child=serializers.DictField(), allow_empty=False)

    def validate_jobs(self, value: list[dict]) -> list[dict]:
        if len(value) > settings.OFFLOAD_BULK_MAX:
            raise serializers.ValidationError(
                f"at most {settings.OFFLOAD_BULK_MAX} jobs per request"
            )
        return value

    def to_specs(self) -> list[JobSpec]:
        specs, errors = [], {}
        for index, item in enumerate(self.validated_data["jobs"]):
            one = JobSubmitSerializer(data=item)
            if one.is_valid():
                specs.append(one.to_spec())
            else:
                errors[str(index)] = one.errors
        if errors:
            raise serializers.ValidationError({"jobs": errors})
        return specs


class JobRequeueSerializer(StrictSerializer):
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=10_000)
    kind = serializers.CharField(max_length=100, required=False)
    status = serializers.ChoiceField(choices=["failed", "dead"], default="dead")

    def validate(self, attrs: dict) -> dict:
        if not attrs.get("ids") and not attrs.get("kind"):
            raise serializers.ValidationError("name the jobs: give ids, or a kind")
        return attrs


class JobRequeueResultSerializer(serializers.Serializer):
    requeued = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.UUIDField())


class ProgressSerializer(serializers.Serializer):
    percent = serializers.FloatField(allow_null=True)
    current = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)
    message = serializers.CharField(allow_blank=True)


class JobErrorSerializer(serializers.Serializer):
    type = serializers.CharField()
    message = serializers.CharField()
    retryable = serializers.BooleanField()
    attempts = serializers.IntegerField(allow_null=True)


class JobLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    cancel = serializers.URLField()
    retry = serializers.URLField()


# A job's links: their names in the representation and the URL names they point to.
LINKS = {"self": "job-detail", "cancel": "job-cancel", "retry": "job-retry"}


# The Job fields job_representation reads (the status read's fast path selects these).
REPRESENTED_FIELDS = (
    "id", "kind", "status", "version", "priority", "queue", "params", "progress_percent",
    "progress_current", "progress_total", "progress_message", "result", "error", "attempts",
    "next_attempt_at", "idempotency_key", "callback_url", "run_at", "created_at", "started_at",
    "finished_at", "heartbeat_at", "worker",
)  # fmt: skip


class JobSerializer(serializers.Serializer):
    """A job as the API shows it. Built by hand: this is the hottest read path."""

    id = serializers.UUIDField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    version = serializers.IntegerField()
    priority = serializers.IntegerField()
    queue = serializers.CharField()
    params = serializers.JSONField()
    progress = ProgressSerializer()
    result = serializers.JSONField(allow_null=True)
    error = JobErrorSerializer(allow_null=True)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    idempotency_key = serializers.CharField(allow_null=True)
    callback_url = serializers.CharField(allow_blank=True)
    run_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    worker = serializers.CharField(allow_blank=True)
    links = JobLinksSerializer()

    def to_representation(self, job: Job) -> dict[str, Any]:
        request = self.context.get("request")
        links = {
            name: reverse(url_name, kwargs={"job_id": job.id}, request=request)
            for name, url_name in LINKS.items()
        }
        return job_representation(job, links=links)


def _when(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def job_representation(job: Any, *, links: dict[str, str]) -> dict[str, Any]:
    """A job as the API shows it, from anything with the Job's attribute names (a Job, or a
    row of the status read's fast path, jobs/api/fastread.py, which must answer alike)."""
    return {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "version": job.version,
        "priority": job.priority,
        "queue": job.queue,
        "params": job.params,
        "progress": {
            "percent": job.progress_percent,
            "current": job.progress_current,
            "total": job.progress_total,
            "message": job.progress_message,
        },
        "result": job.result,
        "error": job.error,
        "attempts": job.attempts,
        "next_attempt_at": _when(job.next_attempt_at),
        "idempotency_key": job.idempotency_key,
        "callback_url": job.callback_url,
        "run_at": _when(job.run_at),
        "created_at": _when(job.created_at),
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
        "heartbeat_at": _when(job.heartbeat_at),
        "worker": job.worker,
        "links": links,
    }


class JobPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = JobSerializer(many=True)


class JobBulkResultSerializer(serializers.Serializer):
    jobs = JobSerializer(many=True)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
