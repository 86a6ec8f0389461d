"""`/metrics`: Prometheus text summed over every process (the test process submits, worker
children finish, a separate web process answers the scrape), and guarded."""

import httpx
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import Job
from jobs.services import JobSpec, job_cancel, job_submit
from tests.support import WebServer, Worker, wait_for

FINAL = ("succeeded", "failed", "dead", "cancelled")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.django_db
def test_metrics_from_loopback_are_served(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    scrape = samples(response.content.decode())
    assert value(scrape, "offload_broker_up") == 1.0


@pytest.mark.django_db
def test_metrics_from_elsewhere_need_the_token(client):
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    with override_settings(OFFLOAD_METRICS_TOKEN="s3cret-token"):
        refused = client.get("/metrics", **remote)
        wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **remote)
        right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **remote)
    no_token_configured = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ", **remote)

    assert refused.status_code == 403
    assert "OFFLOAD_METRICS_TOKEN" in refused.json()["error"]["message"]
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert no_token_configured.status_code == 403  # an empty token never matches


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_counts_match_a_known_set_of_jobs_across_processes(worker_paused, log_dir):
    # A worker of this test's own: the counts come from processes the test started.
    runner = Worker(log_dir=log_dir, queues="default").start()
    web = WebServer(log_dir=log_dir).start()
    try:
        before = samples(httpx.get(f"{web.url}/metrics").text)
        ids = []
        for params in [{}, {}, {}, {"fail": "transient", "fail_attempts": 1}]:
            ids.append(job_submit(spec=JobSpec(kind="demo.sleep", params=params), owner=None)[0])
        for _ in range(2):
            ids.append(
                job_submit(spec=JobSpec(kind="demo.sleep", params={"fail": "error"}), owner=None)[0]
            )
        long, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 60}), owner=None)
        ids.append(long)
        wait_for(lambda: Job.objects.get(id=long.id).status == "running", what="long job running")
        job_cancel(job=long)
        wait_for(
            lambda: Job.objects.filter(id__in=[j.id for j in ids], status__in=FINAL).count() == 7,
            timeout=60,
            what="7 jobs final",
        )

        def scrape_settled() -> dict | None:
            # The worker's last increments land just after the final status is committed.
            after = samples(httpx.get(f"{web.url}/metrics").text)
            done = value(after, "offload_jobs_finished_total", kind="demo.sleep", status="failed")
            return after if done - value(before, "offload_jobs_finished_total", kind="demo.sleep",
                                         status="failed") >= 2 else None  # fmt: skip

        after = wait_for(scrape_settled, what="the failures counted")
    finally:
        web.stop()
        runner.stop()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    kind = {"kind": "demo.sleep"}
    assert delta("offload_jobs_submitted_total", **kind) == 7
    assert delta("offload_jobs_finished_total", **kind, status="succeeded") == 4
    assert delta("offload_jobs_finished_total", **kind, status="failed") == 2
    assert delta("offload_jobs_finished_total", **kind, status="cancelled") == 1
    assert delta("offload_job_retries_total", **kind) == 1
    assert delta("offload_job_duration_seconds_count", **kind, status="succeeded") == 4
    assert delta("offload_job_duration_seconds_count", **kind, status="failed") == 2
    assert delta("offload_job_duration_seconds_count", **kind, status="retrying") == 1
    assert delta("offload_job_queue_wait_seconds_count", **kind) == 7
    assert (
        value(after, "offload_jobs_dead", **kind)
        == Job.objects.filter(kind="demo.sleep", status="dead").count()
    )
    assert value(after, "offload_queue_consumers", queue="default") >= 1
    assert value(after, "offload_broker_up") == 1


@pytest.mark.integration
def test_metrics_serve_shows_this_hosts_counters_without_gauges():
    import subprocess

    from tests.support import BIN, ROOT, free_port, process_env

    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "metrics_serve", "--port", str(port)],
        cwd=ROOT, env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def scrape() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
        except httpx.TransportError:
            return None

    try:
        text = wait_for(scrape, timeout=60, what="metrics_serve")
        other = httpx.get(f"http://127.0.0.1:{port}/other")
    finally:
        process.terminate()
        process.wait(timeout=20)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "offload_jobs_submitted" in names  # recorded by this session's processes
    assert "offload_broker_up" not in names  # scrape-time gauges stay with the web
    assert other.status_code == 404


@pytest.mark.django_db
def test_webhook_attempts_and_deliveries_are_counted_exactly(client, user):
    """Three attempts against a real receiver answering 200, 500 and 410: one of each
    outcome; the deliveries gauge is read from the rows."""
    import uuid

    from notifications import services as webhook_services
    from notifications.models import Delivery
    from tests.eventclients import WebhookReceiver

    answers = {1: 200, 2: 500, 3: 410}  # by request number, from 1
    receiver = WebhookReceiver(behaviour=lambda n: answers[n])
    deliveries = [
        Delivery.objects.create(
            owner=user, url=receiver.url, event_type="job.succeeded",
            message_id=f"msg_{uuid.uuid4().hex}", dedupe_key=uuid.uuid4().hex,
            payload={"type": "job.succeeded", "data": {}},
        )
        for _ in range(3)
    ]  # fmt: skip
    Delivery.objects.create(
        owner=user, url=receiver.url, event_type="job.failed", message_id="msg_waiting",
        dedupe_key="waiting", payload={},
    )  # fmt: skip
    before = samples(client.get("/metrics").content.decode())
    try:
        outcomes = [webhook_services.delivery_send(delivery_id=d.id)["status"] for d in deliveries]
    finally:
        receiver.close()
    after = samples(client.get("/metrics").content.decode())

    assert outcomes == ["succeeded", "retrying", "failed"]
    assert len(receiver.requests) == 3
    for outcome in ("succeeded", "retrying", "failed"):
        delta = value(after, "offload_webhook_attempts_total", outcome=outcome) - value(
            before, "offload_webhook_attempts_total", outcome=outcome
        )
        assert delta == 1, outcome
    expected = {"pending": 1, "sending": 0, "retrying": 1, "succeeded": 1, "failed": 1}
    for status, count in expected.items():
        assert value(after, "offload_webhook_deliveries", status=status) == count, status
        assert Delivery.objects.filter(status=status).count() == count
    assert value(before, "offload_webhook_deliveries", status="pending") == 4


@pytest.mark.django_db
def test_beat_leader_and_schedule_slots_are_exported(client):
    import datetime as dt

    from django.utils import timezone

    from jobs.models import BeatLease, ScheduleSlot

    empty = samples(client.get("/metrics").content.decode())
    assert not any(name == "offload_beat_leader" for name, _ in empty)  # no beat ever ran
    assert value(empty, "offload_schedule_slots", outcome="sent") == 0

    now = timezone.now().replace(microsecond=0)
    lease = BeatLease.objects.create(
        name="beat", holder="beat-1@host-a", token=7, expires_at=now + dt.timedelta(seconds=30)
    )
    for schedule, minutes, outcome in [
        ("offload.reaper", 2, "sent"), ("offload.reaper", 1, "skipped"),
        ("offload.cleanup", 60, "failed"), ("offload.reaper", 3, "sent"),
    ]:  # fmt: skip
        ScheduleSlot.objects.create(
            schedule=schedule, due_at=now - dt.timedelta(minutes=minutes), outcome=outcome
        )
    scrape = samples(client.get("/metrics").content.decode())

    assert value(scrape, "offload_beat_leader", holder="beat-1@host-a") == 1
    assert value(scrape, "offload_beat_leader_token") == 7
    assert (
        value(scrape, "offload_beat_lease_expires_timestamp_seconds")
        == (now + dt.timedelta(seconds=30)).timestamp()
    )
    last_slot = "offload_schedule_last_slot_timestamp_seconds"
    reaper_due = value(scrape, last_slot, schedule="offload.reaper")
    assert reaper_due == (now - dt.timedelta(minutes=1)).timestamp()
    cleanup_due = value(scrape, last_slot, schedule="offload.cleanup")
    assert cleanup_due == (now - dt.timedelta(minutes=60)).timestamp()
    claimed = ScheduleSlot.objects.filter(schedule="offload.reaper").latest("claimed_at")
    assert value(
        scrape, "offload_schedule_last_claim_timestamp_seconds", schedule="offload.reaper"
    ) == pytest.approx(claimed.claimed_at.timestamp())
    assert value(scrape, "offload_schedule_slots", outcome="sent") == 2
    assert value(scrape, "offload_schedule_slots", outcome="skipped") == 1
    assert value(scrape, "offload_schedule_slots", outcome="failed") == 1

    # A lease that ran out names no leader any more: its last holder is shown as 0.
    lease.expires_at = now - dt.timedelta(seconds=1)
    lease.save()
    expired = samples(client.get("/metrics").content.decode())
    assert value(expired, "offload_beat_leader", holder="beat-1@host-a") == 0
