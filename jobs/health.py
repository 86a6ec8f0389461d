"""Liveness and readiness probes, and the Prometheus endpoint."""

import hmac
import ipaddress

import kombu
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from jobs import metrics as job_metrics
from jobs.services import BROKER_ERRORS


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def _database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"unreachable: {exc}"
    return "ok"


def _broker_check() -> str:
    try:
        with kombu.Connection(
            settings.CELERY_BROKER_URL,
            connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        ) as conn:
            conn.ensure_connection(max_retries=1)
    except BROKER_ERRORS as exc:
        return f"unreachable: {exc}"
    return "ok"


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker both answer."""
    checks = {"database": _database_check(), "broker": _broker_check()}
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


def _metrics_allowed(request: HttpRequest) -> bool:
    token = settings.OFFLOAD_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False)
        for net in settings.OFFLOAD_METRICS_ALLOWED_NETWORKS
    )


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text: every process's counters plus gauges read at scrape time."""
    if not _metrics_allowed(request):
        return JsonResponse(
            {
                "error": {
                    "code": "forbidden",
                    "message": "Metrics need `Authorization: Bearer <OFFLOAD_METRICS_TOKEN>` "
                    "or a request from OFFLOAD_METRICS_ALLOWED_NETWORKS.",
                    "fields": {},
                }
            },
            status=403,
        )
    return HttpResponse(job_metrics.metrics_render(), content_type=job_metrics.CONTENT_TYPE)
