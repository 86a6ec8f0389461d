"""Signed webhooks through a real worker to real loopback receivers.

Receivers listen on 127.0.0.2 (opened by OFFLOAD_WEBHOOK_ALLOWED_HOSTS in the test
settings); the canary listens on 127.0.0.1 and ::1, which stay refused. The retry
schedule is shortened in the test settings (0.2 s, 0.4 s: three attempts in all).
"""

import datetime as dt
import socket

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.models import Job
from notifications import services
from notifications.models import Delivery, Endpoint
from tests.eventclients import Canary, WebhookReceiver
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def canary():
    listener = Canary()
    # The canary must be able to see a connection, or its zero proves nothing.
    for host in ("127.0.0.1", "::1"):
        socket.create_connection((host, listener.port), timeout=5).close()
    wait_for(lambda: listener.connections == 2, timeout=10, what="the canary to see its probes")
    listener.connections = 0
    yield listener
    listener.close()


def _submit(api, callback_url="", **params) -> str:
    body = {"kind": "demo.sleep", "params": params}
    if callback_url:
        body["callback_url"] = callback_url
    response = api.post("/api/v1/jobs", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _endpoint(api, url, event_types=("job.succeeded", "job.failed")) -> dict:
    response = api.post(
        "/api/v1/webhooks/endpoints",
        {"url": url, "event_types": list(event_types)},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _final_delivery(**filters) -> Delivery:
    def done():
        delivery = Delivery.objects.filter(**filters).first()
        return delivery if delivery and delivery.status in ("succeeded", "failed") else None

    return wait_for(done, timeout=40, what=f"delivery {filters} to finish")


def test_callback_url_gets_a_signed_delivery_and_it_is_recorded(worker, api):
    secret = api.get("/api/v1/webhooks/callback-secret").json()["secret"]
    receiver = WebhookReceiver(secrets=[secret])
    try:
        job_id = _submit(api, callback_url=receiver.url, seconds=0, message="hi")
        delivery = _final_delivery(job_id=job_id)
    finally:
        receiver.close()
    job = Job.objects.get(id=job_id)
    assert delivery.status == "succeeded"
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["verified"] == {secret: True}
    payload = receiver.payloads()[0]
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["job_id"] == job_id
    assert payload["data"]["version"] == job.version
    assert payload["data"]["result"] == job.result
    assert request["headers"]["webhook-id"] == delivery.message_id

    listed = api.get("/api/v1/webhooks/deliveries", {"job": job_id}).json()["results"]
    assert len(listed) == 1
    entry = listed[0]["log"][0]
    assert (entry["attempt"], entry["status_code"]) == (1, 200)
    assert entry["latency_ms"] >= 0
    assert entry["request"]["headers"]["webhook-id"] == delivery.message_id


def test_endpoint_gets_only_its_event_types(worker, api):
    receiver = WebhookReceiver()
    try:
        endpoint = _endpoint(api, receiver.url, event_types=["job.failed"])
        ok = _submit(api, seconds=0)
        bad = _submit(api, fail="error", message="boom")
        delivery = _final_delivery(job_id=bad)
        wait_for(lambda: Job.objects.filter(id=ok, status="succeeded").exists())
    finally:
        receiver.close()
    assert delivery.endpoint_id == endpoint["id"]
    assert [p["type"] for p in receiver.payloads()] == ["job.failed"]
    assert receiver.payloads()[0]["data"]["error"]["message"] == "boom"
    assert not Delivery.objects.filter(job_id=ok).exists()


def test_a_500_is_retried_on_the_schedule_then_fails(worker, api):
    receiver = WebhookReceiver(behaviour=lambda n: 500)
    try:
        endpoint = _endpoint(api, receiver.url)
        job_id = _submit(api, seconds=0)
        delivery = _final_delivery(job_id=job_id)
    finally:
        receiver.close()
    assert delivery.status == "failed"
    assert delivery.attempts == 3 == len(receiver.requests)
    assert [entry["status_code"] for entry in delivery.log] == [500, 500, 500]
    assert delivery.last_error == "the receiver answered 500"
    # all three carry the same webhook-id: the receiver can dedupe
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert Endpoint.objects.get(id=endpoint["id"]).enabled


def test_a_hanging_receiver_times_out_and_the_retry_succeeds(worker, api):
    receiver = WebhookReceiver(behaviour=lambda n: "hang" if n == 1 else 204, hang_seconds=6)
    try:
        _endpoint(api, receiver.url)
        job_id = _submit(api, seconds=0)
        delivery = _final_delivery(job_id=job_id)
    finally:
        receiver.close()
    assert delivery.status == "succeeded"
    assert delivery.attempts == 2
    assert delivery.log[0]["status_code"] is None
    assert "no answer within" in delivery.log[0]["error"]
    assert delivery.log[1]["status_code"] == 204


def test_410_disables_the_endpoint(worker, api):
    receiver = WebhookReceiver(behaviour=lambda n: 410)
    try:
        endpoint = _endpoint(api, receiver.url)
        job_id = _submit(api, seconds=0)
        delivery = _final_delivery(job_id=job_id)
        second = _submit(api, seconds=0)
        wait_for(lambda: Job.objects.filter(id=second, status="succeeded").exists())
    finally:
        receiver.close()
    assert delivery.status == "failed"
    assert delivery.attempts == 1
    body = api.get(f"/api/v1/webhooks/endpoints/{endpoint['id']}").json()
    assert body["enabled"] is False
    assert "410" in body["disabled_reason"]
    assert not Delivery.objects.filter(job_id=second).exists()
    assert len(receiver.requests) == 1


def test_secret_rotation_signs_with_both_until_the_grace_period_ends(worker, api):
    receiver = WebhookReceiver()
    try:
        endpoint = _endpoint(api, receiver.url)
        old = endpoint["secret"]
        rotated = api.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret").json()
        new = rotated["secret"]
        assert new != old
        assert rotated["previous_secret_valid_until"]
        receiver.secrets = [old, new]
        _final_delivery(job_id=_submit(api, seconds=0))
        Endpoint.objects.filter(id=endpoint["id"]).update(
            previous_valid_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        )
        _final_delivery(job_id=_submit(api, seconds=0))
    finally:
        receiver.close()
    during, after = receiver.requests
    assert during["verified"] == {old: True, new: True}
    assert len(during["headers"]["webhook-signature"].split(" ")) == 2
    assert after["verified"] == {old: False, new: True}
    tampered = after["body"].replace(b'"succeeded"', b'"failed"')
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, after["headers"])


def test_redeliver_sends_again_with_the_same_id_and_only_for_the_owner(worker, api, other_api):
    receiver = WebhookReceiver()
    try:
        _endpoint(api, receiver.url)
        delivery = _final_delivery(job_id=_submit(api, seconds=0))
        assert (
            other_api.post(f"/api/v1/webhooks/deliveries/{delivery.id}/redeliver").status_code
            == 404
        )
        assert other_api.get(f"/api/v1/webhooks/deliveries/{delivery.id}").status_code == 404
        response = api.post(f"/api/v1/webhooks/deliveries/{delivery.id}/redeliver")
        assert response.status_code == 202
        wait_for(lambda: len(receiver.requests) == 2, timeout=30, what="the redelivery")
        wait_for(lambda: Delivery.objects.get(id=delivery.id).status == "succeeded")
    finally:
        receiver.close()
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert Delivery.objects.get(id=delivery.id).attempts == 2


def test_long_waits_are_released_by_the_sweep(worker, api, settings):
    receiver = WebhookReceiver(behaviour=lambda n: 503 if n == 1 else 200)
    try:
        _endpoint(api, receiver.url)
        job_id = _submit(api, seconds=0)
        wait_for(lambda: len(receiver.requests) == 1, timeout=30)
        # A long wait: the retry is not a countdown; it waits in the database.
        Delivery.objects.filter(job_id=job_id).update(
            status="retrying", next_attempt_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
        )
        wait_for(lambda: Delivery.objects.get(job_id=job_id).status == "retrying", timeout=10)
        assert services.deliveries_release_due() == 0
        Delivery.objects.filter(job_id=job_id).update(
            next_attempt_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        )
        assert services.deliveries_release_due() == 1
        delivery = _final_delivery(job_id=job_id)
    finally:
        receiver.close()
    assert delivery.status == "succeeded"


# --- hostile callers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:{port}/",
        "http://100.64.0.1:{port}/",
        "http://[fd00::1]:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f000001:{port}/",
        "file:///etc/passwd",
        "ftp://example.com/x",
    ],
)
def test_unsafe_callback_urls_are_a_400_at_submit(api, canary, url):
    url = url.format(port=canary.port)
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep", "callback_url": url}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "callback_url" in error["fields"]
    assert "refused" in str(error["fields"]["callback_url"])
    assert not Job.objects.exists()
    endpoint = api.post("/api/v1/webhooks/endpoints", {"url": url}, format="json")
    assert endpoint.status_code == 400
    assert not Endpoint.objects.exists()
    assert canary.connections == 0


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(worker, api, canary):
    url = f"http://{socket.gethostname()}:{canary.port}/hook"
    job_id = _submit(api, callback_url=url, seconds=0)

    delivery = _final_delivery(job_id=job_id)

    assert delivery.status == "failed"
    assert delivery.attempts == 1
    assert "not a public address" in delivery.last_error
    assert canary.connections == 0


def test_a_redirect_to_a_private_address_is_not_followed(worker, api, canary):
    target = f"http://127.0.0.1:{canary.port}/steal"
    receiver = WebhookReceiver(behaviour=lambda n: (302, target))
    try:
        _endpoint(api, receiver.url)
        delivery = _final_delivery(job_id=_submit(api, seconds=0))
    finally:
        receiver.close()
    assert delivery.status == "failed"
    assert [entry["status_code"] for entry in delivery.log] == [302, 302, 302]
    assert canary.connections == 0
