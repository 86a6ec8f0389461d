"""The worker side of the lifecycle has its query count pinned: a run goes through Celery's
own tracer in-process (`Task.apply`), so the signal handlers of jobs/worker.py, the task
base and the run's fenced writes all take part, exactly as in a worker child.

A fast run is one read (the claim) and one write (the final status, the running move folded
in); a run that is marked running first adds one write; a job cancelled before its run is
one read and no write. Each write is one statement (no BEGIN/COMMIT pairs) and one event.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import events, lifecycle
from jobs.models import Job, JobStatus
from jobs.registry import kind_get

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(queries) -> list[str]:
    return [q["sql"].split()[0].upper() for q in queries]


def _run_in_process(job: Job) -> tuple[list[str], list[dict]]:
    task = kind_get(job.kind).task
    seen: list[dict] = []
    events.listener_add(seen.append)
    try:
        with CaptureQueriesContext(connection) as queries:
            task.apply(args=(str(job.id),), task_id=str(job.id))
    finally:
        events.listener_remove(seen.append)
    return _statements(queries), [(e["status"], e["version"]) for e in seen]


def _queued(owner=None, **params) -> Job:
    return Job.objects.create(
        kind="demo.sleep", status=JobStatus.QUEUED, params=params, owner=owner
    )


def test_a_fast_run_is_one_claim_read_and_one_final_write(settings):
    settings.OFFLOAD_RUNNING_MARK_AFTER = 60  # the keeper never marks it meanwhile
    job = _queued(seconds=0, steps=1, fail="", fail_attempts=0, message="")

    statements, seen = _run_in_process(job)

    assert statements == ["SELECT", "UPDATE"]
    assert seen == [("succeeded", 2)]
    job.refresh_from_db()
    assert (job.status, job.version, job.attempts, job.deliveries) == ("succeeded", 2, 1, 1)
    assert job.started_at is not None
    assert job.finished_at >= job.started_at


def test_a_run_marked_before_its_body_adds_one_write(settings):
    settings.OFFLOAD_RUNNING_MARK_AFTER = 0  # mark every run before its body runs
    job = _queued(seconds=0, steps=1, fail="", fail_attempts=0, message="")

    statements, seen = _run_in_process(job)

    assert statements == ["SELECT", "UPDATE", "UPDATE"]
    assert seen == [("running", 2), ("succeeded", 3)]


def test_a_failing_run_is_one_claim_read_and_one_final_write(settings):
    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    job = _queued(seconds=0, steps=1, fail="error", fail_attempts=0, message="bad input")

    statements, seen = _run_in_process(job)

    assert statements == ["SELECT", "UPDATE"]
    assert seen == [("failed", 2)]
    job.refresh_from_db()
    assert (job.status, job.error["message"]) == ("failed", "bad input")


def test_a_job_cancelled_before_its_run_is_one_read_and_no_write():
    job = _queued(seconds=0, steps=1, fail="", fail_attempts=0, message="")
    Job.objects.filter(id=job.id).update(status=JobStatus.CANCELLED, version=2)

    statements, seen = _run_in_process(job)

    assert statements == ["SELECT"]
    assert seen == []
    job.refresh_from_db()
    assert (job.status, job.version) == ("cancelled", 2)


def _delivery_and_job(owner, receiver, *, job_status: str = "queued"):
    """An endpoint of `owner` at `receiver`, a pending delivery to it, and its attempt job."""
    from notifications import services
    from notifications.models import Delivery

    endpoint = services.endpoint_create(owner=owner, url=receiver.url, event_types=[])
    receiver.secrets = [endpoint.secret]
    target = Job.objects.create(kind="demo.sleep", owner=owner, status="succeeded")
    delivery = Delivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        job=target,
        url=endpoint.url,
        event_type="job.succeeded",
        message_id=f"msg_{target.id.hex}",
        dedupe_key=target.id.hex,
        payload={"type": "job.succeeded", "data": {"job_id": str(target.id)}},
    )
    job = Job.objects.create(
        kind=services.DELIVER_KIND, params={"delivery_id": str(delivery.id)}, status=job_status
    )
    return endpoint, delivery, job


def test_a_webhook_attempt_is_two_round_trips(settings, django_user_model):
    """The claim read, which claims the delivery in the same query; the attempt's record
    sent in one query with the job's final write (one transaction). The claim commits
    without waiting for its WAL flush (`SET LOCAL` in the same query), and the setting
    does not outlive it."""
    from tests.eventclients import WebhookReceiver

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    owner = django_user_model.objects.create_user("hooks")
    receiver = WebhookReceiver()
    try:
        endpoint, delivery, job = _delivery_and_job(owner, receiver)

        task = kind_get(job.kind).task
        with CaptureQueriesContext(connection) as queries:
            task.apply(args=(str(job.id),), task_id=str(job.id))

        assert _statements(queries) == ["SET", "UPDATE"]
        assert "UPDATE notifications_delivery" in queries[0]["sql"]
        last = queries[-1]["sql"]
        assert last.index("UPDATE notifications_delivery") < last.index("UPDATE jobs_job")
        job.refresh_from_db()
        assert (job.status, job.result["status"]) == ("succeeded", "succeeded")
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "succeeded",
            1,
            200,
        )
        assert [r["verified"] for r in receiver.requests] == [{endpoint.secret: True}]
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)
    finally:
        receiver.close()


def test_a_webhook_attempt_job_no_longer_waiting_claims_nothing(settings, django_user_model):
    """The delivery is claimed in the job's claim read only when the job is waiting to run:
    a cancelled attempt job leaves its delivery pending, for the sweeper, and sends nothing."""
    from tests.eventclients import WebhookReceiver

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    owner = django_user_model.objects.create_user("hooks-cancelled")
    receiver = WebhookReceiver()
    try:
        _, delivery, job = _delivery_and_job(owner, receiver, job_status="cancelled")

        with CaptureQueriesContext(connection) as queries:
            kind_get(job.kind).task.apply(args=(str(job.id),), task_id=str(job.id))

        assert len(queries) == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert receiver.requests == []
    finally:
        receiver.close()


def test_a_second_attempt_job_for_one_delivery_sends_nothing(settings, django_user_model):
    """Two attempt jobs for one delivery (a release raced a redeliver): the first one's claim
    read claims the delivery; the second's finds it taken and sends nothing."""
    from tests.eventclients import WebhookReceiver

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    owner = django_user_model.objects.create_user("hooks-twice")
    receiver = WebhookReceiver()
    try:
        _, delivery, first = _delivery_and_job(owner, receiver)
        second = Job.objects.create(kind=first.kind, params=first.params)
        task = kind_get(first.kind).task

        task.apply(args=(str(first.id),), task_id=str(first.id))
        task.apply(args=(str(second.id),), task_id=str(second.id))

        first.refresh_from_db()
        second.refresh_from_db()
        assert first.result["status"] == "succeeded"
        assert second.result == {"skipped": True}
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("succeeded", 1)
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_an_owned_run_costs_no_endpoints_query_when_its_owner_has_none_enabled(
    settings, django_user_model
):
    """The final write itself returns whether the owner has an enabled endpoint, so the
    webhook hook asks nothing more of the database for the many owners without one."""
    from notifications import services
    from notifications.models import Delivery

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    owner = django_user_model.objects.create_user("no-hooks")
    other = django_user_model.objects.create_user("other-hooks")
    services.endpoint_create(
        owner=owner, url="https://hooks.example.com/off", event_types=[], enabled=False
    )
    services.endpoint_create(owner=other, url="https://hooks.example.com/other", event_types=[])
    job = _queued(owner, seconds=0, steps=1, fail="", fail_attempts=0, message="")

    statements, seen = _run_in_process(job)

    assert statements == ["SELECT", "UPDATE"]
    assert seen == [("succeeded", 2)]
    assert not Delivery.objects.filter(job=job).exists()


def test_an_owned_run_queues_the_delivery_of_its_owners_enabled_endpoint(
    settings, django_user_model
):
    from notifications import services
    from notifications.models import Delivery

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    owner = django_user_model.objects.create_user("with-hooks")
    endpoint = services.endpoint_create(
        owner=owner, url="https://hooks.example.com/on", event_types=["job.succeeded"]
    )
    services.endpoint_create(
        owner=owner, url="https://hooks.example.com/failed-only", event_types=["job.failed"]
    )
    job = _queued(owner, seconds=0, steps=1, fail="", fail_attempts=0, message="")

    statements, seen = _run_in_process(job)

    assert statements[:3] == ["SELECT", "UPDATE", "SELECT"]  # claim, final write, endpoints
    assert seen[0] == ("succeeded", 2)  # then the queued event of the delivery's own job
    deliveries = Delivery.objects.filter(job=job)
    assert [(d.endpoint_id, d.event_type) for d in deliveries] == [(endpoint.id, "job.succeeded")]


def test_a_thumbnail_run_is_two_round_trips(settings, tmp_path, user, other_user):
    """The claim read also finds the upload (owner checked in SQL); the outputs' records go
    in the query of the final write. Another user's upload id is found by neither."""
    from django.core.files.base import ContentFile

    from jobs.models import StoredFile
    from jobs.uploads import upload_create
    from tests.files import jpeg_bytes

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    settings.MEDIA_ROOT = tmp_path
    photo = upload_create(owner=user, file=ContentFile(jpeg_bytes(400, 300), name="p.jpg"))
    params = {"upload": str(photo.id), "sizes": [64, 32], "fit": "contain", "format": "JPEG"}
    job = Job.objects.create(
        kind="thumbnail", owner=user, status=JobStatus.QUEUED, params={**params, "quality": 80}
    )
    theirs = Job.objects.create(
        kind="thumbnail",
        owner=other_user,
        status=JobStatus.QUEUED,
        params={**params, "quality": 80},
    )

    statements, seen = _run_in_process(job)
    their_statements, their_seen = _run_in_process(theirs)

    assert statements == ["SELECT", "INSERT"]
    assert seen == [("succeeded", 2)]
    job.refresh_from_db()
    outputs = job.result["outputs"]
    rows = {str(row.id): row for row in StoredFile.objects.filter(purpose="thumbnail")}
    assert sorted(rows) == sorted(o["file"] for o in outputs)
    for output in outputs:
        row = rows[output["file"]]
        assert (row.job_id, row.owner_id, row.size) == (job.id, user.id, output["bytes"])
        assert (row.width, row.height) == (output["width"], output["height"])
        assert (tmp_path / row.storage_name).stat().st_size == row.size
    assert their_statements == ["SELECT", "UPDATE"]
    assert their_seen == [("failed", 2)]
    theirs.refresh_from_db()
    assert theirs.error["message"] == f"Upload {photo.id} is gone or is not the job owner's."


def _retry_message_run(job: Job) -> list[tuple]:
    """The job's retry message (Celery's second delivery, `retries=1`) run in-process."""
    task = kind_get(job.kind).task
    seen: list[dict] = []
    events.listener_add(seen.append)
    try:
        task.apply(args=(str(job.id),), task_id=str(job.id), retries=1)
    finally:
        events.listener_remove(seen.append)
    return [(e["status"], e["version"]) for e in seen]


@pytest.mark.parametrize(
    "previous_attempt",
    [
        pytest.param(0, id="never-marked"),
        # Marked running (a progress call, or the keeper) and not yet `retrying`: in a
        # thread pool the retry's message can be taken by another thread at this point.
        pytest.param(1, id="marked-running"),
    ],
)
def test_a_retry_taken_before_its_previous_attempt_is_written_waits_for_that_write(
    settings, previous_attempt
):
    """Celery publishes a retry's message before the previous attempt writes `retrying`:
    a message with a near-zero countdown can be claimed first. The run waits for that
    write, then runs as attempt 2 and its own writes go through."""
    import threading

    from django.db import connections

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    job = _queued(seconds=0, steps=1, fail="", fail_attempts=0, message="")
    Job.objects.filter(id=job.id).update(
        status=JobStatus.RUNNING, attempts=previous_attempt, version=2
    )
    claimed = threading.Event()

    def previous_attempt_writes() -> None:
        try:
            claimed.wait(10)  # the run has read the job once
            Job.objects.filter(id=job.id).update(status=JobStatus.RETRYING, attempts=1, version=3)
        finally:
            connections.close_all()

    original = lifecycle.job_claim

    def claim_then_signal(**kwargs):
        try:
            return original(**kwargs)
        finally:
            claimed.set()

    writer = threading.Thread(target=previous_attempt_writes)
    writer.start()
    try:
        lifecycle.job_claim = claim_then_signal
        seen = _retry_message_run(job)
    finally:
        lifecycle.job_claim = original
        writer.join()

    job.refresh_from_db()
    assert (job.status, job.attempts, job.result["attempt"]) == ("succeeded", 2, 2)
    assert seen == [("succeeded", 4)]


def test_a_retry_whose_previous_attempt_never_wrote_runs_after_the_wait(monkeypatch, settings):
    from jobs import worker

    settings.OFFLOAD_RUNNING_MARK_AFTER = 60
    monkeypatch.setattr(worker, "RETRY_CATCH_UP", 0.05)
    job = _queued(seconds=0, steps=1, fail="", fail_attempts=0, message="")

    seen = _retry_message_run(job)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.result["attempt"]) == ("succeeded", 2, 2)
    assert seen == [("succeeded", 2)]
