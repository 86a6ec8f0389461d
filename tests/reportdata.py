"""Jobs and contacts with known times, durations and errors, to check reports against
(fixtures: import them into a test module or conftest)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from jobs.models import Job
from notifications.models import Contact

DAY = date(2026, 3, 10)
MIDNIGHT = datetime(2026, 3, 10, tzinfo=UTC)


def job_make(
    *,
    kind: str,
    status: str,
    owner=None,
    created: datetime,
    seconds: float | None = None,
    error: dict | None = None,
) -> Job:
    job = Job.objects.create(kind=kind, status=status, owner=owner, error=error)
    sets = {"created_at": created}
    if seconds is not None:
        sets.update(started_at=created, finished_at=created + timedelta(seconds=seconds))
    Job.objects.filter(id=job.id).update(**sets)
    job.refresh_from_db()
    return job


@pytest.fixture
def jobs_of_a_day(user, other_user):
    """The user's jobs on DAY (durations and errors differ per kind), one the day before,
    one the day after, another user's and a system job on DAY."""
    at = MIDNIGHT
    for i in range(20):  # thumbnail: 1..20 s, spread over the first 10 hours
        job_make(kind="thumbnail", status="succeeded", owner=user,
                 created=at + timedelta(minutes=30 * i), seconds=i + 1)  # fmt: skip
    bad_header = {"type": "CsvImportError", "message": "=bad header <b>", "retryable": False}
    for i in range(3):
        job_make(kind="csv_import", status="failed", owner=user, error=bad_header,
                 created=at + timedelta(hours=13, minutes=i), seconds=60 + i)  # fmt: skip
    job_make(kind="csv_import", status="dead", owner=user, created=at + timedelta(hours=14),
             seconds=5, error={"type": "WorkerLost", "message": "worker vanished"})  # fmt: skip
    job_make(kind="thumbnail", status="queued", owner=user, created=at + timedelta(hours=23))
    # Created the day before, finished on DAY; then one of the next day.
    job_make(kind="thumbnail", status="succeeded", owner=user,
             created=at - timedelta(minutes=1), seconds=30)  # fmt: skip
    job_make(kind="thumbnail", status="succeeded", owner=user,
             created=at + timedelta(days=1), seconds=1)  # fmt: skip
    job_make(kind="demo.sleep", status="succeeded", owner=other_user,
             created=at + timedelta(hours=2), seconds=2)  # fmt: skip
    job_make(kind="cleanup", status="succeeded", owner=None,
             created=at + timedelta(hours=3), seconds=4)  # fmt: skip


@pytest.fixture
def contacts():
    """Contacts in three countries, some unsubscribed, with attributes, and text cells a
    spreadsheet would run as formulas."""
    unsubscribed = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    rows = [
        Contact(email="ann@example.com", first_name="=HYPERLINK(\"http://x\")", last_name="Lee",
                phone="+44 20 7946 0000", country="GB", attributes={"plan": "gold", "n": 3}),
        Contact(email="bob@example.com", first_name="Bob", last_name="-2+3", phone="",
                country="US", attributes={"plan": "silver"}, unsubscribed_at=unsubscribed),
        Contact(email="cy@example.com", first_name="@SUM(A1)", last_name="\tTab", phone="",
                country="GB", attributes={"plan": "gold"}),
        Contact(email="di@example.com", first_name="\rCR", last_name="a=b", phone="",
                country="FR", attributes={}),
        Contact(email="ed@example.com", first_name="Ed", last_name="", phone="",
                country="GB", attributes={"plan": "gold"}, unsubscribed_at=unsubscribed),
    ]  # fmt: skip
    Contact.objects.bulk_create(rows)
    return list(Contact.objects.order_by("email"))
