"""`cleanup`: delete what is older than its retention, category by category, in batches.

Categories are registered by the apps that own the data (jobs/retention.py). This module
registers the jobs app's own: finished jobs per status (succeeded, failed, dead,
cancelled), django-celery-results rows and claimed schedule slots. Other apps add theirs
(webhook delivery logs, uploads, generated files) with `retention_register`, and this kind
picks them up. Retention is read from settings (OFFLOAD_RETENTION_*_DAYS); 0 keeps a
category for ever.

Each batch selects at most `batch_size` primary keys and deletes exactly those rows in
its own short transaction: no single huge DELETE, no table lock, and a cancelled or
fenced-out run stops between two batches. The result reports, per category, the rows
deleted and the batches used.
"""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import CASCADE, DO_NOTHING, SET_NULL, Model, Q, QuerySet
from django.db.models import signals as models_signals
from django.db.models.deletion import get_candidate_relations_to_delete
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework import serializers

from jobs.models import Job, JobStatus, ScheduleSlot
from jobs.registry import StrictBooleanField, job_kind
from jobs.retention import RetentionCategory, retention_categories, retention_register
from jobs.runtime import JobRun
from jobs.schedules.defaults import schedule_default

for _status, _days in (
    (JobStatus.SUCCEEDED, 7),
    (JobStatus.FAILED, 30),
    (JobStatus.DEAD, 30),
    (JobStatus.CANCELLED, 30),
):
    retention_register(
        f"jobs.{_status}",
        model=Job,
        age_field="finished_at",
        days_setting=f"OFFLOAD_RETENTION_{_status.upper()}_DAYS",
        default_days=_days,
        filter=Q(status=_status),
    )
retention_register(
    "celery.results",
    model=TaskResult,
    age_field="date_done",
    days_setting="OFFLOAD_RETENTION_TASK_RESULTS_DAYS",
    default_days=7,
)
retention_register(
    "schedules.slots",
    model=ScheduleSlot,
    age_field="claimed_at",
    days_setting="OFFLOAD_RETENTION_SCHEDULE_SLOTS_DAYS",
    default_days=30,
)


class LeaseLost(Exception):
    """A newer run of this schedule took over: this one must stop writing."""


def _category_names() -> list[str]:
    return [category.name for category in retention_categories()]


class CleanupParams(serializers.Serializer):
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, allow_empty=False
    )
    batch_size = serializers.IntegerField(min_value=1, max_value=50_000, required=False)
    dry_run = StrictBooleanField(default=False)

    def validate_categories(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(_category_names()))
        if unknown:
            raise serializers.ValidationError(
                f"unknown categories {', '.join(unknown)}; known: {', '.join(_category_names())}"
            )
        return value


def retention_days(category: RetentionCategory) -> int:
    return int(getattr(settings, category.days_setting, category.default_days))


def _old_rows(category: RetentionCategory, cutoff: Any) -> Any:
    rows = category.model._default_manager.filter(**{f"{category.age_field}__lt": cutoff})
    return rows.filter(category.filter) if category.filter is not None else rows


def _batch_delete(model: type[Model], pks: list) -> int:
    """One DELETE for the batch. Django's collector would load every row and delete them
    100 at a time as soon as another model points here (webhook deliveries and stored
    files with SET_NULL, the email send ledger with CASCADE); instead, SET_NULL references
    are cleared with one UPDATE each and CASCADE ones deleted with one DELETE each (their
    own references followed the same way). A delete signal, or any other kind of
    reference, takes Django's way."""
    batch = model._base_manager.filter(pk__in=pks)
    if not _fast_deletable(model):
        return batch.delete()[0]
    return _raw_delete_with_references(model, batch)


def _references(model: type[Model]) -> list:
    # Hidden relations (related_name="+") included, as Django's collector sees them.
    return [
        rel
        for rel in get_candidate_relations_to_delete(model._meta)
        if rel.on_delete is not DO_NOTHING
    ]


def _fast_deletable(model: type[Model], depth: int = 0) -> bool:
    signalled = any(
        signal.has_listeners(model)
        for signal in (models_signals.pre_delete, models_signals.post_delete)
    )
    if signalled or depth > 3:
        return False
    for rel in _references(model):
        if rel.on_delete is CASCADE:
            if not _fast_deletable(rel.related_model, depth + 1):
                return False
        elif rel.on_delete is not SET_NULL:
            return False
    return True


def _raw_delete_with_references(model: type[Model], rows: QuerySet) -> int:
    for rel in _references(model):
        referring = rel.related_model._base_manager.filter(**{f"{rel.field.name}__in": rows})
        if rel.on_delete is CASCADE:
            _raw_delete_with_references(rel.related_model, referring)
        else:
            referring.update(**{rel.field.name: None})
    # QuerySet._raw_delete is the single statement Django's own fast path issues.
    return rows._raw_delete(rows.db)


def category_clean(
    *,
    category: RetentionCategory,
    batch_size: int,
    dry_run: bool = False,
    between_batches: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Delete one category's expired rows in batches; returns its counts."""
    days = retention_days(category)
    if days <= 0:
        return {"days": days, "deleted": 0, "batches": 0, "kept_forever": True}
    cutoff = timezone.now() - timedelta(days=days)
    old = _old_rows(category, cutoff)
    report = {"days": days, "cutoff": cutoff.isoformat(), "deleted": 0, "batches": 0}
    if dry_run:
        report["would_delete"] = old.count()
        return report
    pk_name = category.model._meta.pk.name
    while True:
        between_batches()
        pks = list(old.order_by().values_list(pk_name, flat=True)[:batch_size])
        if not pks:
            break
        with transaction.atomic():
            batch = category.model._default_manager.filter(**{f"{pk_name}__in": pks})
            if category.before_delete is not None:
                category.before_delete(list(batch))
            deleted = _batch_delete(category.model, pks)
        report["deleted"] += deleted
        report["batches"] += 1
    return report


def cleanup_run(
    *,
    categories: list[str] | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    between_batches: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Clean every (or the named) category; the result has counts per category."""
    batch_size = batch_size or settings.OFFLOAD_CLEANUP_BATCH_SIZE
    chosen = [c for c in retention_categories() if categories is None or c.name in categories]
    report = {
        category.name: category_clean(
            category=category,
            batch_size=batch_size,
            dry_run=dry_run,
            between_batches=between_batches,
        )
        for category in chosen
    }
    return {
        "categories": report,
        "deleted": sum(item["deleted"] for item in report.values()),
        "dry_run": dry_run,
    }


@job_kind(
    "cleanup",
    params=CleanupParams,
    queue="bulk",
    staff_only=True,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 60,
)
def cleanup(job: JobRun) -> dict:
    """Delete rows older than their retention (jobs, task results, slots, app categories)."""
    steps = 0

    def between_batches() -> None:
        nonlocal steps
        steps += 1
        job.progress(steps, None, "cleaning")  # stops here when the job was cancelled
        if not job.lease_held():
            raise LeaseLost("a newer run of this schedule took over; stopped between batches")

    return cleanup_run(
        categories=job.params.get("categories"),
        batch_size=job.params.get("batch_size"),
        dry_run=job.params["dry_run"],
        between_batches=between_batches,
    )


schedule_default(
    "offload.cleanup",
    kind="cleanup",
    crontab={"minute": "30", "hour": "3", "timezone": settings.TIME_ZONE},
    expire_seconds=3600,
    description="Nightly: delete rows older than their retention (OFFLOAD_RETENTION_*).",
)
