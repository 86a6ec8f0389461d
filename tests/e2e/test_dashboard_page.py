"""The operator's dashboard in headless Chromium: a staff login from the admin index to the
dashboard, with a real worker answering and a day of finished jobs in the chart."""

import datetime as dt
import os
import random
import shutil
import socket
from pathlib import Path

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.services import JobSpec, job_submit
from tests.e2e.test_live_page import browser  # noqa: F401  (the Chromium fixture)
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def history() -> None:
    """A day of finished jobs, more in working hours, some failures."""
    now, rng = timezone.now(), random.Random(8)
    rows = []
    for hours_ago in range(24):
        busy = 4 + int(10 * max(0.0, 1 - abs(hours_ago - 8) / 8))
        for _ in range(busy):
            at = now - dt.timedelta(hours=hours_ago, minutes=rng.randint(0, 59))
            status = rng.choices(["succeeded", "failed", "dead", "cancelled"], [20, 2, 1, 1])[0]
            kind = rng.choice(["thumbnail", "csv_import", "email", "demo.sleep"])
            rows.append(Job(kind=kind, status=status, created_at=at, finished_at=at))
    Job.objects.bulk_create(rows)
    for row in rows:  # created_at is set on insert; put it back in the past
        Job.objects.filter(id=row.id).update(created_at=row.finished_at)


def test_staff_open_the_dashboard_from_the_admin(worker, web, staff_user, browser, tmp_path):  # noqa: F811
    history()
    for _ in range(3):
        job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 0}), owner=None)
    job_submit(spec=JobSpec(kind="demo.sleep", params={"fail": "error"}), owner=None)
    wait_for(
        lambda: not Job.objects.filter(status__in=["queued", "running", "retrying"]).exists(),
        timeout=60,
        what="the submitted jobs to finish",
    )
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.goto(f"{web.url}/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-pass-123")
    page.click("input[type=submit]")
    page.click("#offload-dashboard-link a")
    page.wait_for_url(f"{web.url}/admin/dashboard/")

    name = worker.name.replace("%h", socket.gethostname())
    assert page.locator(f"#workers tr[data-worker='{name}']").count() == 1
    assert page.locator("#queues tr[data-queue='default']").count() == 1
    assert page.locator("#throughput g[data-hour]").count() == 24
    hour_ok = page.locator("#counts-hour td[data-kind='demo.sleep'][data-status='succeeded']")
    expected = Job.objects.filter(
        kind="demo.sleep",
        status="succeeded",
        created_at__gte=timezone.now() - dt.timedelta(hours=1),
    ).count()
    assert int(hour_ok.inner_text()) == expected
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # A failed count opens the admin's job list with that filter.
    page.click("#counts-hour td[data-kind='demo.sleep'][data-status='failed'] a")
    page.wait_for_url("**/admin/jobs/job/?*status__exact=failed*")
    assert page.locator("#result_list tbody tr").count() >= 1

    assert errors == []
    assert all(url.startswith(web.url) for url in requests)  # nothing from the internet
    shots = os.environ.get("OFFLOAD_SCREENSHOTS")
    if shots:
        shutil.copy(tmp_path / "dashboard.png", Path(shots) / "dashboard.png")
