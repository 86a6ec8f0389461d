"""OpenAPI schema, its browsable page, and the health probes."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_schema_lists_every_jobs_endpoint():
    response = Client().get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/bulk",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/events",
        "/api/v1/webhooks/endpoints",
        "/api/v1/webhooks/endpoints/{endpoint_id}/rotate-secret",
        "/api/v1/webhooks/deliveries",
        "/api/v1/webhooks/deliveries/{delivery_id}/redeliver",
    ):
        assert path in paths
    assert "202" in paths["/api/v1/jobs"]["post"]["responses"]
    assert "get" in paths["/api/v1/jobs/{job_id}"]


def test_docs_page_serves_its_assets_locally():
    page = Client().get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()


def test_healthz():
    assert Client().get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_and_broker():
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}
