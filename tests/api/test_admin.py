"""The Django admin: the job list with filters, search, progress and actions."""

import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_job_list_filters_and_searches(admin_client, user):
    wanted = Job.objects.create(kind="demo.sleep", owner=user, status="failed")
    Job.objects.create(kind="demo.sleep", owner=user, status="succeeded")

    page = admin_client.get("/admin/jobs/job/?status__exact=failed")
    assert page.status_code == 200
    assert str(wanted.id) in page.content.decode()
    assert page.content.decode().count('class="field-kind"') == 1

    found = admin_client.get(f"/admin/jobs/job/?q={wanted.id}")
    assert str(wanted.id) in found.content.decode()
    # A search term that is not a UUID must not crash the id search.
    assert admin_client.get("/admin/jobs/job/?q=not-a-uuid").status_code == 200


def test_job_detail_is_read_only(admin_client, user):
    job = Job.objects.create(kind="demo.sleep", owner=user, params={"seconds": 1})

    page = admin_client.get(f"/admin/jobs/job/{job.id}/change/")

    assert page.status_code == 200
    assert 'name="params"' not in page.content.decode()  # shown, not editable
    assert admin_client.get("/admin/jobs/job/add/").status_code == 403


def test_cancel_action(admin_client, user):
    queued = Job.objects.create(kind="demo.sleep", owner=user, status="queued")
    done = Job.objects.create(kind="demo.sleep", owner=user, status="succeeded")

    response = admin_client.post(
        "/admin/jobs/job/",
        {"action": "action_cancel", "_selected_action": [str(queued.id), str(done.id)]},
        follow=True,
    )

    assert response.status_code == 200
    queued.refresh_from_db()
    done.refresh_from_db()
    assert (queued.status, done.status) == ("cancelled", "succeeded")
    assert "Cancelled 1 job" in response.content.decode()


def test_retry_action_requeues_failed_jobs(admin_client, user):
    failed = Job.objects.create(kind="demo.sleep", owner=user, status="failed", attempts=2)

    admin_client.post(
        "/admin/jobs/job/", {"action": "action_retry", "_selected_action": [str(failed.id)]}
    )

    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("queued", 0)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/django_celery_beat/periodictask/",
        "/admin/django_celery_beat/crontabschedule/",
        "/admin/django_celery_beat/intervalschedule/",
        "/admin/django_celery_beat/clockedschedule/",
        "/admin/django_celery_results/taskresult/",
        "/admin/django_celery_beat/periodictask/add/",
    ],
)
def test_celery_beat_and_results_admins_are_usable(admin_client, path):
    assert admin_client.get(path).status_code == 200


def test_non_staff_cannot_open_the_admin(client, user):
    client.force_login(user)
    response = client.get("/admin/jobs/job/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
