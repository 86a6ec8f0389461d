"""The live page `/app/`: submit a job and watch it move over Server-Sent Events.

Plain Django templates and a little JavaScript (jobs/static/jobs/live.js) on top of the
public API: the page uses nothing an API client could not use.
"""

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from rest_framework.fields import empty

from jobs.registry import Kind, kinds_all


def _params_example(kind: Kind) -> dict[str, Any]:
    """A starting point for the params textarea: each field's default, if it has one."""
    example = {}
    for name, field in kind.params().fields.items():
        if field.default is not empty:
            example[name] = field.default() if callable(field.default) else field.default
    if kind.name == "demo.sleep":
        example.update(seconds=3, steps=10)
    return example


def kinds_for(user: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": kind.name,
            "description": kind.description,
            "example": json.dumps(_params_example(kind), indent=2, default=str),
        }
        for kind in kinds_all()
        if user.is_staff or not kind.staff_only
    ]


@login_required(login_url="app-login")
@ensure_csrf_cookie
def live_page(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/web/live.html", {"kinds": kinds_for(request.user)})
