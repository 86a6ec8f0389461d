"""Slot claims, the overlap lease with its fencing token, and the beat leader lease."""

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import BeatLease, Job, ScheduleLease, ScheduleSlot
from jobs.schedules import leases, services
from jobs.schedules.leader import BeatLeader

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def published(monkeypatch):
    """These tests are about the database side; the publish is recorded, not sent."""
    sent = []
    monkeypatch.setattr(
        "jobs.services.jobs_dispatch",
        lambda *, jobs, expires=None: sent.extend((job, expires) for job in jobs),
    )
    return sent


def _due(seconds_ago=0):
    return (timezone.now() - timedelta(seconds=seconds_ago)).replace(microsecond=0)


def test_a_slot_is_claimed_once_and_the_second_claim_is_logged(make_schedule, caplog):
    task = make_schedule()
    due = _due()
    first = services.schedule_fire(task=task, due_at=due, holder="beat-a")
    with caplog.at_level(logging.INFO, logger="jobs.schedules.services"):
        second = services.schedule_fire(task=task, due_at=due, holder="beat-b")

    assert first.outcome == "sent"
    assert second is None
    assert "was claimed already; nothing sent" in caplog.text
    job = Job.objects.get()
    assert job.owner is None
    assert job.kind == "demo.sleep"
    assert job.status == "queued"
    assert job.idempotency_key == services.slot_key(task.name, due)
    assert ScheduleSlot.objects.get().job_id == job.id


def test_concurrent_claims_of_one_slot_make_one_job(make_schedule):
    task = make_schedule()
    due = _due()
    results, barrier = [], threading.Barrier(4)

    def claim(i):
        barrier.wait()
        try:
            results.append(services.schedule_fire(task=task, due_at=due, holder=f"beat-{i}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result is not None for result in results) == 1
    assert Job.objects.count() == 1
    assert ScheduleSlot.objects.count() == 1


def test_skip_policy_skips_while_the_previous_run_holds_the_lease(make_schedule):
    task = make_schedule(overlap="skip")
    first = services.schedule_fire(task=task, due_at=_due(4), holder="b")
    skipped = services.schedule_fire(task=task, due_at=_due(2), holder="b")

    assert skipped.outcome == "skipped"
    assert str(first.job_id) in skipped.detail
    assert Job.objects.count() == 1

    # The first run finishes: the next slot runs.
    Job.objects.filter(id=first.job_id).update(status="succeeded")
    third = services.schedule_fire(task=task, due_at=_due(0), holder="b")
    assert third.outcome == "sent"
    assert third.token == first.token + 1


def test_a_crashed_holder_frees_its_lease_when_it_expires(make_schedule):
    task = make_schedule(overlap="skip")
    first = services.schedule_fire(task=task, due_at=_due(4), holder="b")
    Job.objects.filter(id=first.job_id).update(status="running")  # and then its worker died
    ScheduleLease.objects.filter(schedule=task.name).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    second = services.schedule_fire(task=task, due_at=_due(2), holder="b")

    assert second.outcome == "sent"
    assert second.token == first.token + 1


def test_the_old_holder_is_fenced_off_after_a_takeover(make_schedule):
    task = make_schedule(overlap="allow")
    old = services.schedule_fire(task=task, due_at=_due(4), holder="b")
    assert leases.lease_renew(job_id=old.job_id) is True
    assert leases.lease_fence(job_id=old.job_id, token=old.token) is True

    new = services.schedule_fire(task=task, due_at=_due(2), holder="b")  # allow: overlaps

    assert new.outcome == "sent"
    assert new.token == old.token + 1
    assert leases.lease_renew(job_id=old.job_id) is False
    assert leases.lease_fence(job_id=old.job_id) is False
    assert leases.lease_fence(job_id=old.job_id, token=old.token) is False
    assert leases.lease_fence(job_id=new.job_id, token=new.token) is True


def test_the_heartbeat_renews_the_lease_of_a_schedule_run(make_schedule, settings):
    from jobs.runtime import JobRun

    settings.OFFLOAD_SCHEDULE_LEASE_SECONDS = 30
    task = make_schedule()
    slot = services.schedule_fire(task=task, due_at=_due(), holder="b")
    ScheduleLease.objects.filter(schedule=task.name).update(
        expires_at=timezone.now() + timedelta(seconds=1)
    )
    job = Job.objects.get(id=slot.job_id)
    run = JobRun(id=job.id, kind=job.kind, params=job.params, attempt=1, version=job.version,
                 schedule_run=True)  # fmt: skip
    assert run.mark()
    run.heartbeat()

    lease = ScheduleLease.objects.get(schedule=task.name)
    assert lease.expires_at > timezone.now() + timedelta(seconds=25)
    assert run.lease_held()


def test_invalid_stored_params_fail_the_slot_without_a_job(make_schedule):
    task = make_schedule(params={"seconds": -5})
    slot = services.schedule_fire(task=task, due_at=_due(), holder="b")
    assert slot.outcome == "failed"
    assert "params are not valid" in slot.detail
    assert Job.objects.count() == 0


def test_one_leader_at_a_time_and_takeover_after_expiry():
    a, b = BeatLeader(seconds=2, holder="a"), BeatLeader(seconds=2, holder="b")
    assert a.hold() is True
    assert b.hold() is False
    assert a.token == 1

    # a stops renewing (it died): b takes over once the lease has expired, never before.
    BeatLease.objects.filter(name="beat").update(expires_at=timezone.now() + timedelta(seconds=1))
    assert b.hold() is False
    deadline = time.monotonic() + 5
    while not b.hold():
        assert time.monotonic() < deadline, "the follower never took over"
        time.sleep(0.1)
    assert b.token == 2
    a.leading, a._valid_until = True, 0.0  # force a to ask the database again
    assert a.hold() is False


def test_a_clean_stop_hands_over_at_once():
    a, b = BeatLeader(seconds=30, holder="a"), BeatLeader(seconds=30, holder="b")
    assert a.hold()
    assert not b.hold()
    a.release()
    assert b.hold() is True


def test_election_off_lets_every_beat_send():
    assert BeatLeader(seconds=0, holder="a").hold()
    assert BeatLeader(seconds=0, holder="b").hold()


def test_a_schedule_run_is_visible_to_staff_only(make_schedule, api, staff_api):
    task = make_schedule()
    slot = services.schedule_fire(task=task, due_at=_due(), holder="b")

    staff_view = staff_api.get(f"/api/v1/jobs/{slot.job_id}")
    assert staff_view.status_code == 200
    assert staff_view.json()["idempotency_key"].startswith(f"schedule:{task.name}@")
    assert str(slot.job_id) in [
        job["id"] for job in staff_api.get("/api/v1/jobs").json()["results"]
    ]
    assert api.get(f"/api/v1/jobs/{slot.job_id}").status_code == 404
    assert api.get("/api/v1/jobs").json()["results"] == []


def test_a_run_message_expires_at_the_end_of_its_slot_grace(make_schedule, published):
    task = make_schedule(every=60, expire_seconds=50)
    due = _due(1)
    services.schedule_fire(task=task, due_at=due, holder="b")

    [(job, expires)] = published
    assert expires == due + timedelta(seconds=50)
    assert job.queue == "default"
