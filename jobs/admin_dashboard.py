"""The operator's dashboard in the admin: a staff-only page (`admin.site.admin_view`) linked
from the admin index. The reads live in jobs/dashboard.py; this builds the page, including
the throughput chart as inline SVG (no script, nothing fetched from elsewhere)."""

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from jobs import dashboard

WORKERS_TIMEOUT = 1.0
CHART = {"width": 30 + 24 * 18, "height": 150, "base": 135, "bar": 14, "step": 18, "left": 32}


def _changelist(**filters: str) -> str:
    return f"{reverse('admin:jobs_job_changelist')}?{urlencode(filters)}"


def _since(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def _count_rows(counts: dashboard.Counts) -> tuple[list[dict], list[dict]]:
    since = _since(counts.since)
    rows = [
        {
            "kind": kind,
            "cells": [
                {
                    "status": status,
                    "count": by_status.get(status, 0),
                    "url": _changelist(
                        kind__exact=kind, status__exact=status, created_at__gte=since
                    ),
                }
                for status in dashboard.STATUSES
            ],
        }
        for kind, by_status in counts.by_kind.items()
    ]
    totals = [
        {
            "status": status,
            "count": counts.totals.get(status, 0),
            "url": _changelist(status__exact=status, created_at__gte=since),
        }
        for status in dashboard.STATUSES
    ]
    return rows, totals


def throughput_chart(hours: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars (succeeded, failed or dead, cancelled) scaled to the busiest hour."""
    most = max((h["succeeded"] + h["failed"] + h["cancelled"] for h in hours), default=0)
    scale = (CHART["base"] - 15) / most if most else 0
    bars = []
    for i, hour in enumerate(hours):
        x = CHART["left"] + i * CHART["step"]
        h_ok = round(hour["succeeded"] * scale, 1)
        h_bad = round(hour["failed"] * scale, 1)
        h_cancel = round(hour["cancelled"] * scale, 1)
        y_ok = CHART["base"] - h_ok
        y_bad = y_ok - h_bad
        bars.append(
            {
                **hour,
                "x": x,
                "h_ok": h_ok,
                "y_ok": y_ok,
                "h_bad": h_bad,
                "y_bad": y_bad,
                "h_cancel": h_cancel,
                "y_cancel": y_bad - h_cancel,
                "label": i % 6 == 0,
            }
        )
    return {**CHART, "bars": bars, "max": most}


def dashboard_view(request: HttpRequest) -> HttpResponse:
    data = dashboard.dashboard_data(workers_timeout=WORKERS_TIMEOUT)
    windows = []
    for key, title, counts in data["windows"]:
        rows, totals = _count_rows(counts)
        counts.rows, counts.total_cells = rows, totals
        windows.append((key, title, counts))
    context = {
        **admin.site.each_context(request),
        **data,
        "windows": windows,
        "title": "Dashboard",
        "chart": throughput_chart(data["throughput"]),
        "ready_total": sum(d["ready"] for d in data["queues"].depths.values()),
        "workers_timeout": WORKERS_TIMEOUT,
    }
    return TemplateResponse(request, "jobs/admin/dashboard.html", context)
