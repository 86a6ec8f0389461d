"""The live page end to end in headless Chromium (Debian's, through Playwright)."""

import os
import shutil
from pathlib import Path

import pytest

from jobs.models import Job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("OFFLOAD_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM} (CI=true: a failure, not a skip)")
        pytest.skip(f"Chromium is missing at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_log_in_submit_and_watch_a_job_finish_live(worker, web, user, browser, tmp_path):
    Job.objects.create(kind="demo.sleep", owner=user, status="succeeded", version=3)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{web.url}/app/")
    assert "/app/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("text=did not match")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/app/")
    page.wait_for_selector("#recent tr[data-status=succeeded]")  # the existing job is listed

    # Bad params are shown with the API's message, and nothing is submitted.
    page.select_option("#kind", "demo.sleep")
    page.fill("#params", '{"seconds": -5}')
    page.click("#submit-button")
    page.wait_for_selector("#submit-error:not([hidden])")
    assert "not valid" in page.inner_text("#submit-error")
    assert Job.objects.filter(owner=user).count() == 1

    # The friendly form fills the params; the job runs and the page follows it over SSE.
    page.fill("#demo-seconds", "2")
    page.fill("#demo-steps", "4")
    page.click("#submit-button")
    page.wait_for_selector("#current:not([hidden])")
    page.wait_for_function(
        "Number(document.getElementById('current-percent').textContent) > 0"
        " && Number(document.getElementById('current-percent').textContent) < 100"
    )
    page.screenshot(path=str(tmp_path / "live-running.png"), full_page=True)
    page.wait_for_selector("#current-status.succeeded")
    page.wait_for_selector("#current-outcome:not([hidden])")
    job = Job.objects.filter(owner=user, status="succeeded").order_by("-created_at").first()
    assert page.inner_text("#current-id") == str(job.id)
    assert page.inner_text("#current-version") == str(job.version)
    assert '"slept": 2' in page.inner_text("#current-outcome-body")
    assert page.inner_text("#current-percent") == "100"
    row = page.locator(f"#recent tr[data-job-id='{job.id}']")
    assert row.get_attribute("data-status") == "succeeded"

    # A failing job shows its error; the recent list follows jobs submitted elsewhere.
    page.select_option("#demo-fail", "error")
    page.click("#submit-button")
    page.wait_for_selector("#current-status.failed")
    assert "Error" in page.inner_text("#current-outcome-title")
    assert "failed on purpose" in page.inner_text("#current-outcome-body")

    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    elsewhere = client.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json").json()["id"]
    page.wait_for_selector(f"#recent tr[data-job-id='{elsewhere}'][data-status=succeeded]")

    # A file chosen on the page is uploaded first and named in params: thumbnails of it.
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (200, 80, 40)).save(image)
    not_image = tmp_path / "notes.png"
    not_image.write_text("<html>not an image</html>")
    page.select_option("#kind", "thumbnail")
    page.fill("#params", '{"sizes": [64, 128], "format": "PNG"}')
    page.set_input_files("#file", str(not_image))
    page.click("#submit-button")
    page.wait_for_selector("#submit-error:not([hidden])")
    assert "Upload refused" in page.inner_text("#submit-error")
    page.set_input_files("#file", str(image))
    page.click("#submit-button")
    page.wait_for_selector("#current-status.succeeded", timeout=60_000)
    outcome = page.inner_text("#current-outcome-body")
    thumb = Job.objects.get(id=page.inner_text("#current-id"))
    assert thumb.kind == "thumbnail"
    assert thumb.params["upload"]
    assert [out["width"] for out in thumb.result["outputs"]] == [64, 128]
    assert thumb.result["outputs"][0]["url"] in outcome
    page.screenshot(path=str(tmp_path / "live-done.png"), full_page=True)
    shots = os.environ.get("OFFLOAD_SCREENSHOTS")
    if shots:
        for name in ("live-running.png", "live-done.png"):
            shutil.copy(tmp_path / name, Path(shots) / name)
    assert errors == []
