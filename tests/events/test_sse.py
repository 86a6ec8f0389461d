"""Server-Sent Events under a real uvicorn, fed by real workers through RabbitMQ."""

import httpx
import pytest

from jobs.models import Job
from tests.conftest import token_for
from tests.eventclients import SseReader
from tests.support import WebServer, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _auth(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


def _submit(api, **params) -> str:
    response = api.post("/api/v1/jobs", {"kind": "demo.sleep", "params": params}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _stats(web, staff_user) -> dict:
    response = httpx.get(f"{web.url}/api/v1/events/stats", headers=_auth(staff_user), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_stream_sends_snapshot_then_every_change_and_closes_at_the_end(worker, web, api, user):
    job_id = _submit(api, seconds=1.2, steps=4)
    reader = SseReader(f"{web.url}/api/v1/jobs/{job_id}/events", headers=_auth(user)).start()

    assert reader.ended.wait(30), "the stream did not close after the job finished"
    assert reader.status == 200
    frames = reader.frames
    assert frames[0]["event"] == "snapshot"
    assert all(frame["event"] == "job" for frame in frames[1:])
    versions = [frame["data"]["version"] for frame in frames]
    assert versions == sorted(set(versions)), "versions must rise, each once"
    assert [frame["id"] for frame in frames] == [str(v) for v in versions]
    job = Job.objects.get(id=job_id)
    last = frames[-1]["data"]
    assert (last["status"], last["version"], last["result"]) == (
        "succeeded",
        job.version,
        job.result,
    )
    assert any(f["data"]["status"] == "running" for f in frames), "progress was not streamed"
    assert "owner_id" not in last


def test_last_event_id_resumes_without_a_repeat(worker, web, api, user):
    job_id = _submit(api, seconds=0)
    done = wait_for(lambda: Job.objects.filter(id=job_id, status="succeeded").first())
    url = f"{web.url}/api/v1/jobs/{job_id}/events"

    up_to_date = SseReader(url, headers={**_auth(user), "Last-Event-ID": str(done.version)})
    behind = SseReader(url, headers={**_auth(user), "Last-Event-ID": str(done.version - 1)})
    up_to_date.start(), behind.start()

    assert up_to_date.ended.wait(20)
    assert behind.ended.wait(20)
    assert up_to_date.status == 204  # EventSource stops reconnecting on a 204
    assert up_to_date.frames == []
    assert [f["data"]["version"] for f in behind.frames] == [done.version]


def test_keepalive_comments_while_nothing_happens(worker, web, api, user):
    job_id = _submit(api, seconds=3.5, steps=1)
    reader = SseReader(f"{web.url}/api/v1/jobs/{job_id}/events", headers=_auth(user)).start()

    wait_for(lambda: reader.comments >= 2, timeout=20, what="keep-alive comments")
    assert reader.ended.wait(30)


def test_another_users_job_is_a_404_and_streams_nothing(web, api, other_user):
    job_id = _submit(api, seconds=0)
    response = httpx.get(
        f"{web.url}/api/v1/jobs/{job_id}/events", headers=_auth(other_user), timeout=10
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "data:" not in response.text


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/v1/jobs/{job}/events", {}, 401),
        ("/api/v1/jobs/{job}/events", {"Authorization": "Token wrong"}, 401),
        ("/api/v1/jobs/not-a-uuid/events", "auth", 404),
        ("/api/v1/events", {}, 401),
    ],
)
def test_bad_stream_requests_get_clear_errors(web, api, user, path, headers, status):
    job_id = _submit(api, seconds=0)
    headers = _auth(user) if headers == "auth" else headers
    response = httpx.get(web.url + path.format(job=job_id), headers=headers, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def _database_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_disconnecting_clients_leave_nothing_behind(worker, web, api, user, staff_user):
    job_id = _submit(api, seconds=30, steps=30)
    before = _stats(web, staff_user)["subscribers"]
    connections = _database_connections()
    readers = [
        SseReader(f"{web.url}/api/v1/jobs/{job_id}/events", headers=_auth(user)).start()
        for _ in range(11)
    ]
    readers.append(SseReader(f"{web.url}/api/v1/events", headers=_auth(user)).start())
    wait_for(lambda: all(r.frames for r in readers), timeout=20, what="snapshots")
    assert _stats(web, staff_user)["subscribers"] == before + 12
    # Open streams hold no database connection each (a small shared pool does the reads).
    assert _database_connections() - connections <= 6

    for reader in readers:
        reader.stop()
    wait_for(
        lambda: (
            _stats(web, staff_user)["subscribers"] == before
            and _stats(web, staff_user)["watched_jobs"] == 0
        ),
        timeout=30,
        what="the server to drop the disconnected streams",
    )
    api.post(f"/api/v1/jobs/{job_id}/cancel")


def test_all_jobs_stream_shows_only_the_callers_jobs(worker, web, api, other_api, user):
    reader = SseReader(f"{web.url}/api/v1/events", headers=_auth(user)).start()
    wait_for(lambda: reader.status == 200, timeout=20)
    mine = _submit(api, seconds=0.3, steps=2)
    theirs = _submit(other_api, seconds=0)

    wait_for(
        lambda: any(e["job_id"] == mine and e["status"] == "succeeded" for e in reader.events()),
        timeout=30,
        what="my job's events",
    )
    wait_for(lambda: Job.objects.filter(id=theirs, status="succeeded").exists())
    reader.stop()
    assert {e["job_id"] for e in reader.events()} == {mine}


def test_quickstart_fallback_without_the_exchange(worker, api, user, log_dir):
    """OFFLOAD_EVENTS_BACKEND=none: the web process reads watched jobs from the database."""
    server = WebServer(
        log_dir=log_dir,
        env=process_env(OFFLOAD_EVENTS_BACKEND="none", OFFLOAD_EVENTS_POLL_INTERVAL="0.1"),
    ).start()
    try:
        everything = SseReader(f"{server.url}/api/v1/events", headers=_auth(user)).start()
        wait_for(lambda: everything.status == 200, timeout=20)
        job_id = _submit(api, seconds=0.8, steps=2)
        reader = SseReader(f"{server.url}/api/v1/jobs/{job_id}/events", headers=_auth(user)).start()
        assert reader.ended.wait(30)
        wait_for(
            lambda: (
                [e["status"] for e in everything.events() if e["job_id"] == job_id][-1:]
                == ["succeeded"]
            ),
            timeout=20,
            what="the all-jobs stream to see the job finish",
        )

        # A job that starts and ends between two reads still reaches the all-jobs stream,
        # and its final event comes once (a later job's event proves later reads happened).
        def statuses(job):
            return [e["status"] for e in everything.events() if e["job_id"] == job]

        quick = _submit(api, seconds=0)
        wait_for(lambda: "succeeded" in statuses(quick), timeout=20, what="the quick job")
        later = _submit(api, seconds=0.5)
        wait_for(lambda: "succeeded" in statuses(later), timeout=20, what="the later job")
        assert statuses(quick).count("succeeded") == 1
        everything.stop()
        assert reader.frames[0]["event"] == "snapshot"
        last = reader.frames[-1]["data"]
        assert last["status"] == "succeeded"
        assert last["version"] == Job.objects.get(id=job_id).version
    finally:
        server.stop()
