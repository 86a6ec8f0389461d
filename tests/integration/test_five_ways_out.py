"""All five ways out deliver the same events for the same job: polling, SSE, WebSocket,
a webhook, and a reply queue bound to `offload.events`, on real RabbitMQ and PostgreSQL."""

import asyncio
import json
import threading

import httpx
import pytest
import websockets
from django.conf import settings

from jobs.models import Job
from tests.conftest import token_for
from tests.eventclients import ReplyQueue, SseReader, WebhookReceiver
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FIELDS = ("job_id", "kind", "status", "version", "progress", "result", "error")


def _same(event: dict) -> dict:
    return {name: event.get(name) for name in FIELDS}


def test_poll_sse_websocket_webhook_and_reply_queue_agree(worker, web, api, user):
    token = token_for(user)
    auth = {"Authorization": f"Token {token}"}
    replies = ReplyQueue(settings.CELERY_BROKER_URL, binding="job.demo.sleep.*")
    receiver = WebhookReceiver()
    endpoint = api.post(
        "/api/v1/webhooks/endpoints",
        {"url": receiver.url, "event_types": ["job.succeeded"]},
        format="json",
    ).json()
    receiver.secrets = [endpoint["secret"]]
    try:
        job_id = api.post(
            "/api/v1/jobs",
            {"kind": "demo.sleep", "params": {"seconds": 1.5, "steps": 3, "message": "five"}},
            format="json",
        ).json()["id"]

        sse = SseReader(f"{web.url}/api/v1/jobs/{job_id}/events", headers=auth).start()

        ws_events: list[dict] = []

        async def websocket():
            url = web.url.replace("http", "ws") + "/ws/jobs"
            async with websockets.connect(url, additional_headers=auth) as ws:
                await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
                async with asyncio.timeout(40):
                    while not ws_events or ws_events[-1]["status"] not in ("succeeded", "failed"):
                        message = json.loads(await ws.recv())
                        assert message["type"] in ("snapshot", "event"), message
                        ws_events.append(message["event"])

        ws_thread = threading.Thread(target=asyncio.run, args=(websocket(),), daemon=True)
        ws_thread.start()

        polled: list[dict] = []

        def poll():
            with httpx.Client(base_url=web.url, headers=auth, timeout=30) as client:
                while True:
                    body = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 10}).json()
                    if not polled or body["version"] != polled[-1]["version"]:
                        polled.append({**body, "job_id": body["id"]})
                    if body["status"] in ("succeeded", "failed"):
                        return

        poll_thread = threading.Thread(target=poll, daemon=True)
        poll_thread.start()

        assert sse.ended.wait(40)
        ws_thread.join(40)
        poll_thread.join(40)
        wait_for(lambda: receiver.requests, timeout=30, what="the webhook")
        job = Job.objects.get(id=job_id)
        wait_for(
            lambda: any(e["version"] == job.version for e in replies.drain()),
            timeout=20,
            what="the reply queue's last event",
        )
    finally:
        receiver.close()
        replies.close()

    assert job.status == "succeeded"
    final = {
        "job_id": job_id,
        "kind": "demo.sleep",
        "status": "succeeded",
        "version": job.version,
        "progress": {
            "percent": job.progress_percent,
            "current": job.progress_current,
            "total": job.progress_total,
            "message": job.progress_message,
        },
        "result": job.result,
        "error": None,
    }
    reply_events = [e for e in replies.events if e["job_id"] == job_id]
    webhook = receiver.payloads()
    assert len(webhook) == 1
    assert receiver.requests[0]["verified"] == {endpoint["secret"]: True}

    # The same final event, five ways.
    assert _same(sse.events()[-1]) == final
    assert _same(ws_events[-1]) == final
    assert _same(reply_events[-1]) == final
    assert _same(webhook[0]["data"]) == final
    assert _same(polled[-1]) == final

    # Every way saw only real versions, in order; the pushed ways saw every version after
    # their snapshot, exactly as the exchange carried them.
    reply_versions = [e["version"] for e in reply_events]
    assert reply_versions == sorted(set(reply_versions))
    assert reply_versions[-1] == job.version
    assert len(reply_versions) >= 4  # queued, running, progress..., succeeded
    for seen in (sse.events(), ws_events):
        versions = [e["version"] for e in seen]
        assert versions == [versions[0], *[v for v in reply_versions if v > versions[0]]]
        by_version = {e["version"]: _same(e) for e in reply_events}
        assert all(_same(e) == by_version[e["version"]] for e in seen[1:])
    assert {p["version"] for p in polled} <= set(reply_versions)
    assert replies.routing_keys[-1] == "job.demo.sleep.succeeded"
