"""`WS /ws/jobs` under a real uvicorn: start, subscribe, bad messages, ownership."""

import asyncio
import json

import httpx
import pytest
import websockets

from jobs.models import Job
from tests.conftest import token_for
from tests.eventclients import ws_collect
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = {"succeeded", "failed", "dead", "cancelled"}


def _ws(web) -> str:
    return web.url.replace("http://", "ws://") + "/ws/jobs"


def _auth(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


def _finished(job_id):
    def until(received):
        return any(
            m["type"] in ("event", "snapshot")
            and m["event"]["job_id"] == job_id
            and m["event"]["status"] in TERMINAL
            for m in received
        )

    return until


def test_start_job_then_receive_its_events(worker, web, user):
    def until(received):
        started = [m for m in received if m["type"] == "started"]
        return started and _finished(started[0]["job_id"])(received)

    received = asyncio.run(
        ws_collect(
            _ws(web),
            [
                {
                    "type": "start_job",
                    "kind": "demo.sleep",
                    "params": {"seconds": 0.9, "steps": 3},
                    "request_id": "r1",
                }
            ],
            headers=_auth(user),
            until=until,
        )
    )
    assert received[0] == {"type": "started", "job_id": received[0]["job_id"], "request_id": "r1"}
    job = Job.objects.get(id=received[0]["job_id"])
    assert job.owner == user
    assert received[1]["type"] == "snapshot"
    events = [m["event"] for m in received[1:]]
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions))
    assert events[-1]["status"] == "succeeded"
    assert events[-1]["version"] == job.version
    assert events[-1]["result"] == job.result


def test_subscribe_by_token_in_query_and_another_users_job_is_an_error(
    worker, web, api, other_user
):
    response = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "params": {"seconds": 0.5}}, format="json"
    )
    job_id = response.json()["id"]
    mine = api.post("/api/v1/jobs", {"kind": "demo.sleep"}, format="json").json()["id"]
    other_token = token_for(other_user)

    async def scenario():
        async with websockets.connect(f"{_ws(web)}?token={other_token}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
            error = json.loads(await ws.recv())
            # The same socket still works for the caller's own things.
            await ws.send(json.dumps({"type": "subscribe", "job_id": "not-a-uuid"}))
            second = json.loads(await ws.recv())
            leaked = []
            try:
                async with asyncio.timeout(2):
                    while True:
                        leaked.append(json.loads(await ws.recv()))
            except TimeoutError:
                pass
            return error, second, leaked

    error, second, leaked = asyncio.run(scenario())
    assert error["type"] == "error"
    assert error["code"] == "not_found"
    assert second["code"] == "not_found"
    assert leaked == []
    assert mine


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"kind": "demo.sleep"}), "unknown_type"),
        (json.dumps({"type": "start_job", "kind": "nope"}), "unknown_kind"),
        (
            json.dumps({"type": "start_job", "kind": "demo.sleep", "params": {"seconds": -1}}),
            "invalid_params",
        ),
        (json.dumps({"type": "start_job", "kind": "demo.sleep", "extra": 1}), "invalid"),
        (
            json.dumps(
                {"type": "start_job", "kind": "demo.sleep", "callback_url": "http://10.0.0.1/"}
            ),
            "invalid",
        ),
        (json.dumps({"type": "subscribe"}), "invalid"),
        (
            json.dumps({"type": "start_job", "kind": "webhook.deliver", "params": {}}),
            "permission_denied",
        ),
    ],
)
def test_bad_messages_get_an_error_and_the_socket_stays_open(web, user, message, code):
    headers = _auth(user)

    async def scenario():
        async with websockets.connect(_ws(web), additional_headers=headers) as ws:
            await ws.send(message)
            error = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "start_job", "kind": "demo.sleep"}))
            after = json.loads(await ws.recv())
            return error, after

    error, after = asyncio.run(scenario())
    assert error["type"] == "error"
    assert error["code"] == code, error
    assert error["message"]
    assert after["type"] == "started"
    assert Job.objects.filter(owner=user).count() == 1


def test_unauthenticated_socket_gets_an_error_and_is_closed(web):
    async def scenario():
        async with websockets.connect(
            _ws(web), additional_headers={"Authorization": "Token nope"}
        ) as ws:
            error = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return error, closed.value.rcvd.code

    error, code = asyncio.run(scenario())
    assert error["code"] == "not_authenticated"
    assert code == 4401


def test_session_login_works_from_an_allowed_origin_only(worker, web, user):
    with httpx.Client(base_url=web.url) as client:
        page = client.get("/app/login/")
        response = client.post(
            "/app/login/",
            data={
                "username": "alice",
                "password": "alice-pass-123",
                "csrfmiddlewaretoken": page.cookies["csrftoken"],
            },
            headers={"Referer": web.url + "/app/login/"},
        )
        assert response.status_code == 302
        cookie = f"sessionid={client.cookies['sessionid']}"

    def until(received):
        started = [m for m in received if m["type"] == "started"]
        return started and _finished(started[0]["job_id"])(received)

    received = asyncio.run(
        ws_collect(
            _ws(web),
            [{"type": "start_job", "kind": "demo.sleep"}],
            headers={"Cookie": cookie, "Origin": web.url},
            until=until,
        )
    )
    assert received[-1]["event"]["status"] == "succeeded"

    async def foreign():
        async with websockets.connect(
            _ws(web), additional_headers={"Cookie": cookie, "Origin": "https://evil.example"}
        ):
            pass

    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(foreign())


def test_closing_sockets_leave_no_subscriber_behind(worker, web, api, user, staff_user):
    job_id = api.post(
        "/api/v1/jobs", {"kind": "demo.sleep", "params": {"seconds": 30}}, format="json"
    ).json()["id"]
    stats_url = f"{web.url}/api/v1/events/stats"

    def stats():
        return httpx.get(stats_url, headers=_auth(staff_user), timeout=10).json()

    before = stats()["subscribers"]
    headers = _auth(user)

    async def scenario():
        sockets = [await websockets.connect(_ws(web), additional_headers=headers) for _ in range(4)]
        for ws in sockets:
            await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
            assert json.loads(await ws.recv())["type"] == "snapshot"
        during = await asyncio.to_thread(stats)
        for ws in sockets:
            await ws.close()
        return during

    during = asyncio.run(scenario())
    assert during["subscribers"] == before + 4
    wait_for(lambda: stats()["subscribers"] == before, timeout=20, what="sockets dropped")
    assert stats()["watched_jobs"] == 0
    api.post(f"/api/v1/jobs/{job_id}/cancel")
