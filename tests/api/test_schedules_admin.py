"""Schedules in the admin: Offload's checks on the periodic task form, the overlap inline,
the clocked and crontab forms; a refused form saves nothing."""

import html
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from jobs.models import ScheduleConfig

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def _form(**overrides):
    interval, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    data = {
        "name": "demo-every-minute",
        "regtask": "",
        "task": "jobs.kind.demo.sleep",
        "enabled": "on",
        "description": "",
        "interval": str(interval.pk),
        "crontab": "",
        "solar": "",
        "clocked": "",
        "start_time_0": "",
        "start_time_1": "",
        "one_off": "",
        "args": "[]",
        "kwargs": '{"seconds": 1}',
        "expires_0": "",
        "expires_1": "",
        "expire_seconds": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "priority": "",
        "headers": "{}",
        "offload_config-TOTAL_FORMS": "1",
        "offload_config-INITIAL_FORMS": "0",
        "offload_config-MIN_NUM_FORMS": "0",
        "offload_config-MAX_NUM_FORMS": "1",
        "offload_config-0-overlap": "allow",
        "offload_config-0-periodic_task": "",
    }
    data.update(overrides)
    return data


def test_a_valid_schedule_is_saved_with_its_overlap_policy(admin_client):
    response = admin_client.post("/admin/django_celery_beat/periodictask/add/", _form())

    assert response.status_code == 302, html.unescape(response.content.decode())[-3000:]
    task = PeriodicTask.objects.get(name="demo-every-minute")
    assert ScheduleConfig.objects.get(periodic_task=task).overlap == "allow"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"task": "jobs.kind.nope"}, "Unknown job kind 'nope'"),
        ({"task": "celery.backend_cleanup"}, "Unknown job kind"),
        ({"kwargs": '{"seconds": -1}'}, "params are not valid for kind"),
        ({"kwargs": '{"seconds": "x"'}, "Unable to parse JSON"),
        ({"args": "[1]"}, "take no positional args"),
    ],
)
def test_bad_schedules_are_refused_with_a_message(admin_client, overrides, words):
    response = admin_client.post("/admin/django_celery_beat/periodictask/add/", _form(**overrides))

    assert response.status_code == 200
    assert words in html.unescape(response.content.decode())
    assert not PeriodicTask.objects.exists()
    assert not ScheduleConfig.objects.exists()


def test_a_clocked_time_in_the_past_is_refused_on_the_task_and_the_clock(admin_client):
    past = ClockedSchedule.objects.create(clocked_time=timezone.now() - timedelta(hours=1))
    response = admin_client.post(
        "/admin/django_celery_beat/periodictask/add/",
        _form(interval="", clocked=str(past.pk), one_off="on"),
    )
    assert response.status_code == 200
    assert "is in the past" in html.unescape(response.content.decode())
    assert not PeriodicTask.objects.exists()

    when = timezone.now() - timedelta(days=1)
    response = admin_client.post(
        "/admin/django_celery_beat/clockedschedule/add/",
        {"clocked_time_0": when.strftime("%Y-%m-%d"), "clocked_time_1": when.strftime("%H:%M:%S")},
    )
    assert response.status_code == 200
    assert "is in the past" in html.unescape(response.content.decode())
    assert ClockedSchedule.objects.count() == 1


def test_an_invalid_crontab_is_refused_in_its_form(admin_client):
    response = admin_client.post(
        "/admin/django_celery_beat/crontabschedule/add/",
        {
            "minute": "61",
            "hour": "*",
            "day_of_month": "*",
            "month_of_year": "*",
            "day_of_week": "*",
            "timezone": "UTC",
            "periodictask_set-TOTAL_FORMS": "0",
            "periodictask_set-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "'61', not in 0-59 for Minutes" in html.unescape(response.content.decode())
    assert not CrontabSchedule.objects.exists()
