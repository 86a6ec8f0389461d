"""A submit that cannot reach the broker answers 503 and leaves no job behind."""

import httpx
import pytest
from rest_framework.authtoken.models import Token

from jobs.models import Job
from tests.support import WebServer, free_port, process_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web_without_broker(log_dir):
    # A port nothing listens on: the broker is down for this web process.
    env = process_env(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    server = WebServer(log_dir=log_dir, env=env).start()
    yield server
    server.stop()


def test_submit_with_broker_down_is_503_and_records_nothing(web_without_broker, user):
    token = Token.objects.create(user=user)
    headers = {"Authorization": f"Token {token.key}"}

    response = httpx.post(
        f"{web_without_broker.url}/api/v1/jobs",
        json={"kind": "demo.sleep"},
        headers={**headers, "Idempotency-Key": "first-try"},
        timeout=30,
    )

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable"
    assert "nothing was queued" in error["message"]
    assert Job.objects.count() == 0

    bulk = httpx.post(
        f"{web_without_broker.url}/api/v1/jobs/bulk",
        json={"jobs": [{"kind": "demo.sleep"}] * 3},
        headers=headers,
        timeout=30,
    )
    assert bulk.status_code == 503
    assert Job.objects.count() == 0

    ready = httpx.get(f"{web_without_broker.url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["broker"].startswith("unreachable")
