"""Real beat processes and a real worker on RabbitMQ and PostgreSQL: one run per slot with
several beats, leader failover after SIGKILL, no overlap under `skip`, delayed jobs.

The multi-beat test prints its figures (slots, runs, duplicates, skipped, failover time);
run with `-s` to see them. It runs about 35 one-second slots; OFFLOAD_TEST_BEAT_SLOTS=120
makes it a run of a few minutes (that many slots before the kill, half as many after)."""

import itertools
import json
import os
from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from jobs.models import BeatLease, Job, ScheduleConfig, ScheduleSlot
from tests.support import Beat, Worker, process_env, queues_purge, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEASE = 5.0  # the beat leader lease in these tests (30 s by default)
SLOTS = int(os.environ.get("OFFLOAD_TEST_BEAT_SLOTS", "20"))
# Schedule runs lease for 2 s and renew every 0.5 s: a run longer than 2 s survives only
# through its heartbeat.
RUN_ENV = {"OFFLOAD_SCHEDULE_LEASE_SECONDS": "2", "OFFLOAD_HEARTBEAT_INTERVAL": "0.5"}


def _beat_env(lease: float = LEASE) -> dict[str, str]:
    return process_env(
        OFFLOAD_BEAT_LEASE_SECONDS=str(lease), OFFLOAD_BEAT_FOLLOWER_POLL="0.5", **RUN_ENV
    )


@pytest.fixture(scope="module")
def beat_worker(django_db_setup, django_db_blocker, log_dir):
    with django_db_blocker.unblock():
        queues_purge()
    worker = Worker(log_dir=log_dir, concurrency=4, env=process_env(**RUN_ENV)).start()
    yield worker
    worker.stop()


@pytest.fixture
def beats(log_dir):
    started: list[Beat] = []

    def start(count: int, env: dict[str, str]) -> list[Beat]:
        new = [Beat(log_dir=log_dir, env=env) for _ in range(count)]
        for beat in new:
            beat.start()
            started.append(beat)
        return new

    yield start
    for beat in started:
        beat.stop()


def _schedule(
    name: str, *, every: int = 1, params: dict, overlap: str = "skip", expire_seconds=None
) -> PeriodicTask:
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    task = PeriodicTask.objects.create(
        name=name,
        task="jobs.kind.demo.sleep",
        kwargs=json.dumps(params),
        interval=interval,
        expire_seconds=expire_seconds,
    )
    ScheduleConfig.objects.create(periodic_task=task, overlap=overlap)
    return task


def _slots(name: str):
    return ScheduleSlot.objects.filter(schedule=name)


def _all_finished(name: str) -> bool:
    ids = _slots(name).exclude(job_id=None).values_list("job_id", flat=True)
    return (
        not Job.objects.filter(id__in=list(ids))
        .exclude(status__in=["succeeded", "failed", "dead", "cancelled"])
        .exists()
    )


def _duplicates(name: str) -> int:
    """Runs beyond the first of one slot, counted from the Job records themselves."""
    keys = (
        Job.objects.filter(idempotency_key__startswith=f"schedule:{name}@")
        .values("idempotency_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    return sum(row["n"] - 1 for row in keys)


def _leader_pid() -> int | None:
    lease = BeatLease.objects.filter(name="beat", expires_at__gt=timezone.now()).first()
    return int(lease.holder.split(":")[1]) if lease else None


def test_three_beats_run_each_slot_once_and_fail_over_after_sigkill(beat_worker, beats):
    name = "multi-beat"
    # A slot may start up to 3 s late: a beat stalled by a busy machine catches up instead
    # of missing it, so the only slots lost are those of the leaderless period.
    _schedule(name, params={"seconds": 0}, expire_seconds=3)
    group = beats(3, _beat_env())
    by_pid = {beat.pid: beat for beat in group}

    wait_for(
        lambda: _slots(name).count() >= SLOTS, timeout=SLOTS * 3 + 30, interval=0.5, what="slots"
    )
    leader_pid = wait_for(_leader_pid, timeout=30, what="a leader")
    leader = by_pid[leader_pid]
    holder = BeatLease.objects.get(name="beat").holder
    assert set(_slots(name).values_list("claimed_by", flat=True)) == {holder}

    leader.kill()
    killed_at = timezone.now()

    def taken_over():
        slot = _slots(name).filter(claimed_at__gt=killed_at).order_by("claimed_at").first()
        return slot if slot is not None and slot.claimed_by != holder else None

    first_after = wait_for(taken_over, timeout=60, interval=0.1, what="a new leader's slot")
    handover = (first_after.claimed_at - killed_at).total_seconds()
    new_holder = BeatLease.objects.get(name="beat").holder
    assert new_holder != holder
    count_at_handover = _slots(name).count()
    wait_for(
        lambda: _slots(name).count() >= count_at_handover + max(15, SLOTS // 2),
        timeout=SLOTS * 3 + 30,
        interval=0.5,
        what="more slots after the handover",
    )
    for beat in group:
        if beat is not leader:
            beat.stop()
    wait_for(lambda: _all_finished(name), timeout=60, interval=0.2, what="all runs finished")

    slots = list(_slots(name).order_by("due_at"))
    outcomes = Counter(slot.outcome for slot in slots)
    sent = [slot for slot in slots if slot.outcome == "sent"]
    runs = Job.objects.filter(idempotency_key__startswith=f"schedule:{name}@")
    first, last = slots[0].due_at, slots[-1].due_at
    expected = int((last - first).total_seconds()) + 1
    missed = expected - len(slots)
    # The slots lost while nobody led: those between the kill and the new leader's first.
    lost_at_handover = sum(
        1
        for i in range(expected)
        if killed_at - timedelta(seconds=1) < first + timedelta(seconds=i) < first_after.due_at
        and not _slots(name).filter(due_at=first + timedelta(seconds=i)).exists()
    )
    figures = {
        "beats": 3,
        "slots_due": expected,
        "slots_claimed": len(slots),
        "runs": runs.count(),
        "duplicates": _duplicates(name),
        "skipped_overlaps": outcomes.get("skipped", 0),
        "failed": outcomes.get("failed", 0),
        "missed": missed,
        "lost_at_handover": lost_at_handover,
        "failover_seconds": round(handover, 2),
        "lease_seconds": LEASE,
        "attempts_over_1": runs.filter(attempts__gt=1).count(),
        "statuses": dict(Counter(runs.values_list("status", flat=True))),
    }
    print("\nmulti-beat figures:", json.dumps(figures))

    assert figures["duplicates"] == 0
    assert runs.count() == len(sent)
    assert figures["attempts_over_1"] == 0
    # Every run ran and succeeded, except one whose message a busy worker took up after the
    # schedule's expiry: that one is cancelled unrun with an `Expired` error (the backlog
    # guard of `on_revoked`), never run late and never left open.
    for job in runs:
        if job.status != "succeeded":
            assert job.status == "cancelled", (job.id, job.status, job.error)
            assert job.error["type"] == "Expired", (job.id, job.error)
            assert job.started_at is None, (job.id, job.started_at)
    expired = figures["statuses"].get("cancelled", 0)
    assert figures["statuses"].get("succeeded", 0) + expired == len(sent), figures
    assert expired <= len(sent) // 4, figures  # a backlog now and then, not a worker that never ran
    assert {slot.claimed_by for slot in slots} == {holder, new_holder}
    # Hands over within one lease period (plus the follower's poll and a tick).
    assert handover <= LEASE + 2.0, figures
    # Only the slots of that period are lost; every other slot was claimed.
    assert missed == lost_at_handover, figures
    assert lost_at_handover <= LEASE + 2, figures


def test_two_beats_without_election_still_run_each_slot_once(beat_worker, beats):
    """Both beats try every slot: the claimed slots alone keep each to one run (the later
    beat finds the slot claimed, or loses the unique insert)."""
    name = "split-brain"
    _schedule(name, params={"seconds": 0})
    group = beats(2, _beat_env(lease=0))

    wait_for(lambda: _slots(name).count() >= 12, timeout=60, interval=0.5, what="12 slots")
    for beat in group:
        beat.stop()
    wait_for(lambda: _all_finished(name), timeout=60, interval=0.2, what="all runs finished")

    refused = sum(beat.log_path.read_text().count("was claimed already") for beat in group)
    print(f"\nsplit-brain: slots {_slots(name).count()}, refused second claims {refused}")
    assert _duplicates(name) == 0
    assert refused > 0  # both really tried: the database refused the second claims


def test_a_run_longer_than_its_period_is_never_overlapped_under_skip(beat_worker, beats):
    name = "long-runs"
    # Every second, each run takes 3 s: without skip (or without the heartbeat renewing the
    # 2 s lease) runs would overlap.
    _schedule(name, params={"seconds": 3, "steps": 6}, expire_seconds=5)
    group = beats(1, _beat_env())

    wait_for(
        lambda: (
            Job.objects.filter(
                idempotency_key__startswith=f"schedule:{name}@", status="succeeded"
            ).count()
            >= 3
        ),
        timeout=90,
        interval=0.5,
        what="three finished runs",
    )
    group[0].stop()
    wait_for(lambda: _all_finished(name), timeout=60, interval=0.2, what="all runs finished")

    runs = list(
        Job.objects.filter(idempotency_key__startswith=f"schedule:{name}@").order_by("started_at")
    )
    skipped = _slots(name).filter(outcome="skipped").count()
    print(f"\nlong runs: runs {len(runs)}, skipped slots {skipped}")
    assert skipped >= 2 * (len(runs) - 1)
    for earlier, later in itertools.pairwise(runs):
        assert later.started_at >= earlier.finished_at, (earlier.id, later.id)
    assert all(run.status == "succeeded" and run.attempts == 1 for run in runs)


def _queue_depth(name: str) -> int:
    from config.celery_app import app

    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=name, passive=True).message_count


def test_a_delayed_job_runs_once_at_its_time(beat_worker, beats, api):
    beats(1, _beat_env())
    later = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "countdown": 3600}, format="json"
    ).json()
    response = api.post(
        "/api/v1/jobs",
        {"kind": "demo.sleep", "countdown": 3, "params": {"message": "delayed"}},
        format="json",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "scheduled"
    # Nothing waits in the broker: the job is in the database until it is due.
    assert _queue_depth("default") == 0

    job = wait_for(
        lambda: Job.objects.filter(id=body["id"], status="succeeded").first(),
        timeout=60,
        what="the delayed job to run",
    )
    assert job.started_at >= job.run_at
    assert job.attempts == 1
    assert job.result["message"] == "delayed"
    assert job.version <= 4  # scheduled(1) -> queued -> (running) -> succeeded: one run
    print(
        f"\ndelayed job started {(job.started_at - job.run_at).total_seconds():.3f} s after run_at"
    )
    assert Job.objects.get(id=later["id"]).status == "scheduled"

    assert api.post(f"/api/v1/jobs/{later['id']}/cancel").status_code == 202
    assert Job.objects.get(id=later["id"]).status == "cancelled"
