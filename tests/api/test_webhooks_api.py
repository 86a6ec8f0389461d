"""The webhooks API and admin: bad input, ownership, redeliver (no worker needed)."""

import pytest

from jobs.models import Job
from notifications.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db(transaction=True)

URL = "https://hooks.example.com/offload"


def _endpoint(api, **body):
    response = api.post("/api/v1/webhooks/endpoints", {"url": URL, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_list_update_delete(api):
    created = _endpoint(api, event_types=["job.failed", "job.succeeded", "job.failed"])
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["job.failed", "job.succeeded"]
    assert created["enabled"] is True
    listed = api.get("/api/v1/webhooks/endpoints").json()["results"]
    assert [e["id"] for e in listed] == [created["id"]]
    patched = api.patch(
        f"/api/v1/webhooks/endpoints/{created['id']}", {"enabled": False}, format="json"
    ).json()
    assert patched["enabled"] is False
    assert api.delete(f"/api/v1/webhooks/endpoints/{created['id']}").status_code == 204
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "event_types": ["job.exploded"]}, "event_types"),
        ({"url": URL, "colour": "red"}, "colour"),
        ({"url": "http://10.1.2.3/hook"}, "url"),
        ({"url": "ftp://example.com/"}, "url"),
        ({}, "url"),
    ],
)
def test_bad_endpoint_input_is_a_400_naming_the_field(api, body, field):
    response = api.post("/api/v1/webhooks/endpoints", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Endpoint.objects.exists()


def test_patching_to_a_private_url_is_refused_and_changes_nothing(api):
    created = _endpoint(api)
    response = api.patch(
        f"/api/v1/webhooks/endpoints/{created['id']}",
        {"url": "http://[::1]:8000/"},
        format="json",
    )
    assert response.status_code == 400
    assert Endpoint.objects.get().url == URL


def test_another_users_endpoints_and_deliveries_are_404(api, other_api, user):
    created = _endpoint(api)
    job = Job.objects.create(kind="demo.sleep", owner=user, status="succeeded")
    delivery = Delivery.objects.create(
        owner=user, job=job, url=URL, event_type="job.succeeded", message_id="msg_x",
        dedupe_key="x", payload={}, status="failed",
    )  # fmt: skip
    base = "/api/v1/webhooks"
    assert other_api.get(f"{base}/endpoints/{created['id']}").status_code == 404
    assert (
        other_api.patch(f"{base}/endpoints/{created['id']}", {}, format="json").status_code == 404
    )
    assert other_api.delete(f"{base}/endpoints/{created['id']}").status_code == 404
    assert other_api.post(f"{base}/endpoints/{created['id']}/rotate-secret").status_code == 404
    assert other_api.get(f"{base}/endpoints").json()["results"] == []
    assert other_api.get(f"{base}/deliveries").json()["results"] == []
    assert other_api.post(f"{base}/deliveries/{delivery.id}/redeliver").status_code == 404
    assert api.get(f"{base}/deliveries/not-a-uuid").status_code == 404
    assert api.get(f"{base}/endpoints/abc").status_code == 404
    assert Endpoint.objects.get().secret == created["secret"]
    assert Delivery.objects.get().status == "failed"


def test_admin_redeliver_action_queues_an_attempt(client, staff_user, user):
    job = Job.objects.create(kind="demo.sleep", owner=user, status="succeeded")
    delivery = Delivery.objects.create(
        owner=user, job=job, url=URL, event_type="job.succeeded", message_id="msg_y",
        dedupe_key="y", payload={}, status="failed",
    )  # fmt: skip
    client.force_login(staff_user)
    assert client.get("/admin/notifications/delivery/").status_code == 200
    response = client.post(
        "/admin/notifications/delivery/",
        {"action": "action_redeliver", "_selected_action": [str(delivery.id)]},
    )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    attempt = Job.objects.get(kind="webhook.deliver")
    assert attempt.params == {"delivery_id": str(delivery.id)}
    assert attempt.owner is None
    assert attempt.queue == "notifications"


def test_users_cannot_submit_delivery_jobs(api):
    response = api.post(
        "/api/v1/jobs",
        {
            "kind": "webhook.deliver",
            "params": {"delivery_id": "00000000-0000-0000-0000-000000000000"},
        },
        format="json",
    )
    assert response.status_code == 403
