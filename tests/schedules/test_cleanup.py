"""The cleanup kind: 100,000 old rows go in bounded batches, young rows stay."""

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.kinds.cleanup import CleanupParams, cleanup_run
from jobs.models import Job, ScheduleSlot
from jobs.retention import retention_register
from notifications.models import EmailSend
from tests.support import table_rows

pytestmark = pytest.mark.django_db(transaction=True)


def _jobs(count, *, status, age_days, user=None):
    finished = timezone.now() - timedelta(days=age_days)
    Job.objects.bulk_create(
        [
            Job(kind="demo.sleep", status=status, finished_at=finished, owner=user)
            for _ in range(count)
        ],
        batch_size=10_000,
    )


def test_cleanup_of_100k_old_rows_deletes_in_batches_and_keeps_young_ones(settings, user):
    settings.OFFLOAD_RETENTION_SUCCEEDED_DAYS = 7
    settings.OFFLOAD_RETENTION_FAILED_DAYS = 30
    _jobs(100_000, status="succeeded", age_days=8)
    _jobs(300, status="succeeded", age_days=6)  # young: kept
    _jobs(200, status="failed", age_days=8)  # failed keeps 30 days: kept
    _jobs(50, status="failed", age_days=31)
    _jobs(40, status="running", age_days=60)  # not finished: never a cleanup category
    old = timezone.now() - timedelta(days=10)
    TaskResult.objects.bulk_create(
        [TaskResult(task_id=str(uuid.uuid4()), status="SUCCESS") for _ in range(120)]
    )
    TaskResult.objects.update(date_done=old)
    TaskResult.objects.create(task_id="young", status="SUCCESS")

    old_mailed = list(Job.objects.filter(status="succeeded").order_by("finished_at")[:3])
    young_mailed = Job.objects.filter(status="succeeded").order_by("-finished_at").first()
    for job in [*old_mailed, young_mailed]:
        EmailSend.objects.create(job=job, campaign=job, recipient="a@example.com", status="sent")

    with CaptureQueriesContext(connection) as queries:
        result = cleanup_run(batch_size=5_000)

    report = result["categories"]
    assert report["jobs.succeeded"]["deleted"] == 100_000
    assert report["jobs.succeeded"]["batches"] == 20
    assert report["jobs.failed"]["deleted"] == 50
    assert report["celery.results"]["deleted"] == 120
    assert result["deleted"] == 100_000 + 50 + 120
    assert Job.objects.filter(status="succeeded").count() == 300
    assert Job.objects.filter(status="failed").count() == 200
    assert Job.objects.filter(status="running").count() == 40
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["young"]
    assert table_rows(Job) == 540
    assert not EmailSend.objects.filter(job__in=old_mailed).exists()  # cascaded
    assert EmailSend.objects.filter(job=young_mailed).count() == 1
    # No single huge DELETE: one bounded statement per batch, each naming its rows, plus
    # one per batch for each table whose rows cascade with a job (the email send ledger).
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert all(" IN (" in sql for sql in deletes)
    job_deletes = [sql for sql in deletes if Job._meta.db_table in sql.split(" WHERE ")[0]]
    ledger = [sql for sql in deletes if EmailSend._meta.db_table in sql.split(" WHERE ")[0]]
    assert len(job_deletes) == 20 + 1
    assert len(ledger) == 2 * len(job_deletes)  # EmailSend.job and EmailSend.campaign
    assert len(deletes) == len(job_deletes) + len(ledger) + 1  # + the celery results batch
    sizes = [len(re.findall(r"'[0-9a-f-]{32,36}'", sql)) for sql in job_deletes]
    assert sorted(sizes) == [50] + [5_000] * 20, sizes


def test_dry_run_counts_and_deletes_nothing(settings):
    settings.OFFLOAD_RETENTION_SUCCEEDED_DAYS = 7
    _jobs(30, status="succeeded", age_days=9)

    result = cleanup_run(dry_run=True, categories=["jobs.succeeded"])

    assert result["categories"]["jobs.succeeded"]["would_delete"] == 30
    assert list(result["categories"]) == ["jobs.succeeded"]
    assert Job.objects.count() == 30


def test_zero_days_keeps_a_category_for_ever(settings):
    settings.OFFLOAD_RETENTION_SUCCEEDED_DAYS = 0
    _jobs(10, status="succeeded", age_days=900)
    assert cleanup_run()["categories"]["jobs.succeeded"]["deleted"] == 0
    assert Job.objects.count() == 10


def test_categories_registered_by_other_apps_are_walked_with_their_hook(settings, monkeypatch):
    from jobs import retention

    monkeypatch.setattr(retention, "_categories", dict(retention._categories))
    seen = []
    retention_register(
        "test.slots",
        model=ScheduleSlot,
        age_field="claimed_at",
        days_setting="TEST_SLOT_DAYS",
        default_days=1,
        before_delete=lambda rows: seen.extend(row.schedule for row in rows),
    )
    ScheduleSlot.objects.create(schedule="a", due_at=timezone.now(), outcome="sent")
    ScheduleSlot.objects.update(claimed_at=timezone.now() - timedelta(days=2))
    ScheduleSlot.objects.create(schedule="b", due_at=timezone.now(), outcome="sent")

    result = cleanup_run(categories=["test.slots"])

    assert result["categories"]["test.slots"]["deleted"] == 1
    assert seen == ["a"]
    assert list(ScheduleSlot.objects.values_list("schedule", flat=True)) == ["b"]


def test_unknown_categories_are_a_clear_params_error():
    params = CleanupParams(data={"categories": ["jobs.succeeded", "nope"]})
    assert not params.is_valid()
    assert "unknown categories nope" in str(params.errors["categories"])


def test_old_finished_webhook_deliveries_go_and_unfinished_ones_stay(settings, user):
    from notifications.models import Delivery

    settings.OFFLOAD_RETENTION_WEBHOOK_DELIVERIES_DAYS = 30
    job = Job.objects.create(kind="demo.sleep", owner=user, status="succeeded")
    for name, status in [("old-ok", "succeeded"), ("old-failed", "failed"),
                         ("old-retrying", "retrying"), ("young-ok", "succeeded")]:  # fmt: skip
        Delivery.objects.create(
            owner=user, job=job, url="https://example.com/hook", event_type="job.succeeded",
            message_id=f"msg_{name}", dedupe_key=name, payload={}, status=status,
        )  # fmt: skip
    Delivery.objects.exclude(dedupe_key="young-ok").update(
        created_at=timezone.now() - timedelta(days=31)
    )

    result = cleanup_run(categories=["webhooks.deliveries"])

    assert result["categories"]["webhooks.deliveries"]["deleted"] == 2
    assert sorted(Delivery.objects.values_list("dedupe_key", flat=True)) == [
        "old-retrying", "young-ok"
    ]  # fmt: skip


def test_deleting_old_jobs_keeps_their_deliveries_and_files_with_the_job_cleared(settings, user):
    from jobs.models import StoredFile
    from notifications.models import Delivery

    settings.OFFLOAD_RETENTION_SUCCEEDED_DAYS = 7
    _jobs(3, status="succeeded", age_days=8, user=user)
    old = Job.objects.first()
    Delivery.objects.create(
        owner=user, job=old, url="https://example.com/hook", event_type="job.succeeded",
        message_id="msg_1", dedupe_key="d1", payload={}, status="retrying",
    )  # fmt: skip
    StoredFile.objects.create(
        owner=user, job=old, purpose="thumbnail", storage_name="t/1.png", size=1, sha256="0"
    )

    result = cleanup_run(categories=["jobs.succeeded"])

    assert result["categories"]["jobs.succeeded"]["deleted"] == 3
    assert not Job.objects.exists()
    assert Delivery.objects.get().job_id is None
    assert StoredFile.objects.get().job_id is None
