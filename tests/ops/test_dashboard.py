"""The operator's dashboard in the admin: staff only, exact counts against known jobs,
queues and workers read from the real broker, and links into the filtered job list."""

import datetime as dt
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from jobs import dashboard
from jobs.models import Job
from tests.support import free_port

URL = "/admin/dashboard/"


class Cells(HTMLParser):
    """Count cells (`data-window`, `data-kind`, `data-status`) and their link, if any."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], dict] = {}
        self.totals: dict[tuple[str, str], str] = {}
        self.bars: list[dict] = []
        self.workers: list[str] = []
        self._cell: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "td" and "data-status" in attrs:
            key = (attrs["data-window"], attrs["data-kind"], attrs["data-status"])
            self._cell = self.cells[key] = {"text": "", "href": None}
        elif tag == "th" and "data-total" in attrs:
            self._cell = {"text": "", "href": None}
            self.totals[(attrs["data-window"], attrs["data-total"])] = self._cell
        elif tag == "a" and self._cell is not None:
            self._cell["href"] = attrs["href"]
        elif tag == "g" and "data-hour" in attrs:
            self.bars.append(attrs)
        elif tag == "tr" and "data-worker" in attrs:
            self.workers.append(attrs["data-worker"])

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None


def page(client) -> Cells:
    response = client.get(URL)
    assert response.status_code == 200, response.content[:500]
    parser = Cells()
    parser.feed(response.content.decode())
    return parser


def job(kind: str, status: str, *, age: dt.timedelta, finished: bool = True) -> Job:
    now = timezone.now()
    created = Job.objects.create(kind=kind, status=status)
    Job.objects.filter(id=created.id).update(
        created_at=now - age,
        finished_at=(now - age + dt.timedelta(seconds=1)) if finished else None,
    )
    return created


@pytest.fixture
def known_jobs():
    minutes, hours = dt.timedelta(minutes=1), dt.timedelta(hours=1)
    return {
        "ok_recent": [job("demo.sleep", "succeeded", age=10 * minutes) for _ in range(2)],
        "dead_recent": job("demo.sleep", "dead", age=20 * minutes),
        "failed_recent": job("thumbnail", "failed", age=30 * minutes),
        "queued_recent": job("thumbnail", "queued", age=5 * minutes, finished=False),
        "ok_earlier": job("demo.sleep", "succeeded", age=5 * hours),
        "dead_earlier": job("demo.sleep", "dead", age=7 * hours),
        "too_old": job("demo.sleep", "succeeded", age=50 * hours),
    }


@pytest.mark.django_db
def test_staff_see_exact_counts_by_kind_and_status(client, staff_user, known_jobs):
    client.force_login(staff_user)

    cells = page(client)

    def count(window: str, kind: str, status: str) -> int:
        return int(cells.cells[(window, kind, status)]["text"])

    assert count("hour", "demo.sleep", "succeeded") == 2
    assert count("hour", "demo.sleep", "dead") == 1
    assert count("hour", "thumbnail", "failed") == 1
    assert count("hour", "thumbnail", "queued") == 1
    assert count("hour", "demo.sleep", "queued") == 0
    assert count("day", "demo.sleep", "succeeded") == 3  # the 50-hour-old one is not counted
    assert count("day", "demo.sleep", "dead") == 2
    assert int(cells.totals[("hour", "succeeded")]["text"]) == 2
    assert int(cells.totals[("day", "dead")]["text"]) == 2
    # Finished per hour: every finished job of the last 24 hours sits in one bar.
    assert len(cells.bars) == 24
    assert sum(int(bar["data-succeeded"]) for bar in cells.bars) == 3
    assert sum(int(bar["data-failed"]) for bar in cells.bars) == 3  # failed or dead
    assert int(cells.bars[-1]["data-succeeded"]) + int(cells.bars[-2]["data-succeeded"]) >= 2


@pytest.mark.django_db
def test_count_links_open_the_matching_filtered_job_list(client, staff_user, known_jobs):
    client.force_login(staff_user)
    href = page(client).cells[("hour", "demo.sleep", "dead")]["href"]

    query = parse_qs(urlsplit(href).query)
    assert urlsplit(href).path == "/admin/jobs/job/"
    assert query["status__exact"] == ["dead"]
    assert query["kind__exact"] == ["demo.sleep"]
    listed = client.get(href)
    assert listed.status_code == 200
    body = listed.content.decode()
    assert str(known_jobs["dead_recent"].id) in body
    assert str(known_jobs["dead_earlier"].id) not in body  # older than the hour
    assert str(known_jobs["ok_recent"][0].id) not in body


@pytest.mark.django_db
def test_the_admin_index_links_the_dashboard(client, staff_user):
    client.force_login(staff_user)

    index = client.get("/admin/")

    assert index.status_code == 200
    assert f'href="{URL}"' in index.content.decode()


@pytest.mark.django_db
def test_anyone_but_staff_is_sent_to_the_login(client, user, known_jobs):
    anonymous = client.get(URL)
    client.force_login(user)  # logged in, not staff
    not_staff = client.get(URL)

    for response in (anonymous, not_staff):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        assert "demo.sleep" not in response.content.decode()


@pytest.mark.integration
@pytest.mark.django_db
def test_queues_and_workers_come_from_the_broker(client, staff_user, worker):
    client.force_login(staff_user)

    response = client.get(URL)
    cells = page(client)

    import socket

    name = worker.name.replace("%h", socket.gethostname())
    assert name in cells.workers
    body = response.content.decode()
    for queue in ("default", "bulk", "notifications"):
        assert f'data-queue="{queue}"' in body


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_silent_workers_and_an_unreachable_broker_do_not_hang_the_page():
    silent = dashboard.dashboard_workers(timeout=0.5, destination=["nobody@nowhere"])
    unreachable_url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    gone = dashboard.dashboard_workers(timeout=0.5, broker_url=unreachable_url)
    queues = dashboard.dashboard_queues(broker_url=unreachable_url)

    assert silent.names == []
    assert silent.error == ""
    assert gone.names == []
    assert "broker did not answer" in gone.error
    assert queues.depths == {}
    assert "broker did not answer" in queues.error
