"""The status read's fast path (jobs/api/fastread.py) answers exactly as Django does.

Every request goes to Django's ASGI handler alone and to the fast path in front of a
handler of its own (in this process, on the test database). Status, headers (in order) and
body bytes must be equal, and the fast path must have answered the requests meant for it
(its `served` count) and handed every other one to Django.
"""

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from rest_framework.authtoken.models import Token

from jobs.api.fastread import MIDDLEWARE, FastRead
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)

FRESH_ID = re.compile(rb"^[0-9a-f]{32}$")
AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


async def _ask(app, method: str, path: str, headers: list) -> tuple[int, list, bytes]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        response = await client.request(method, path, headers=headers)
    return response.status_code, response.headers.raw, response.content


async def _both(fast: FastRead, method: str, path: str, headers: list) -> bool:
    """Ask Django and the fast path; assert equal answers; say whether the fast path served."""
    django = _fresh_id_masked(await _ask(fast.app, method, path, headers))
    before = fast.served
    answer = _fresh_id_masked(await _ask(fast, method, path, headers))
    assert answer == django, (method, path, headers)
    return fast.served == before + 1


def _fresh_id_masked(answer: tuple[int, list, bytes]) -> tuple[int, list, bytes]:
    """A request id made for the request (32 hex digits) differs each time: mask it."""
    status, raw, body = answer
    raw = [
        (name, b"<fresh>" if name == b"X-Request-ID" and FRESH_ID.match(value) else value)
        for name, value in raw
    ]
    return status, raw, body


def _compare(requests: list[tuple[str, str, list, bool]]) -> None:
    """Each (method, path, headers, served by the fast path) answers alike both ways."""

    async def scenario() -> list[tuple[str, str, list, bool]]:
        fast = FastRead(ASGIHandler())
        try:
            return [
                (method, path, headers, await _both(fast, method, path, headers))
                for method, path, headers, _ in requests
            ]
        finally:
            await fast.aclose()

    assert asyncio.run(scenario()) == requests


def _auth(user, request_id: str = "parity", **more: str) -> list[tuple[str, str]]:
    key = Token.objects.get_or_create(user=user)[0].key
    return [("Authorization", f"Token {key}"), ("X-Request-ID", request_id), *more.items()]


def _jobs(owner) -> list[Job]:
    """One job in each state, with every field a status read shows."""
    error = {"type": "ValueError", "message": "bad row 3 \u2028 é", "retryable": False}
    states = [
        {"status": JobStatus.QUEUED, "params": {"nested": {"a": [1, 2.5, None]}, "u": "é\u2029"}},
        {"status": JobStatus.RUNNING, "progress_percent": 42.5, "progress_current": 17,
         "progress_total": 40, "progress_message": "row 17 of 40", "attempts": 1,
         "started_at": AT, "heartbeat_at": AT + timedelta(seconds=3), "worker": "w1@host"},
        {"status": JobStatus.SUCCEEDED, "result": {"rows": 3, "ratio": 0.1 + 0.2, "big": 2**62},
         "started_at": AT, "finished_at": AT.replace(microsecond=0), "version": 4},
        {"status": JobStatus.FAILED, "error": {**error, "attempts": 1}, "finished_at": AT},
        {"status": JobStatus.DEAD, "error": {**error, "attempts": 5}, "attempts": 5},
        {"status": JobStatus.CANCELLED, "finished_at": AT},
        {"status": JobStatus.SCHEDULED, "run_at": AT + timedelta(days=1)},
        {"status": JobStatus.RETRYING, "next_attempt_at": AT, "attempts": 2,
         "error": {**error, "retryable": True, "attempts": 2}},
        {"status": JobStatus.QUEUED, "idempotency_key": "order-7 ✓", "priority": 9,
         "queue": "bulk", "callback_url": "https://example.com/hook?x=1"},
    ]  # fmt: skip
    return [Job.objects.create(kind="demo.sleep", owner=owner, **fields) for fields in states]


def test_every_job_state_reads_alike(user):
    requests = []
    for job in _jobs(user):
        path = f"/api/v1/jobs/{job.id}"
        etag = f'"{job.id.hex}-{job.version}"'
        requests += [
            ("GET", path, _auth(user), True),
            ("HEAD", path, _auth(user), True),
            ("GET", path, _auth(user, **{"If-None-Match": etag}), True),
            ("GET", path, _auth(user, **{"If-None-Match": f'W/{etag}, "other"'}), True),
            ("GET", path, _auth(user, **{"If-None-Match": f'"{job.id.hex}-99"'}), True),
        ]
    _compare(requests)


def test_who_may_read_what(user, other_user, staff_user, django_user_model):
    mine, system = (
        Job.objects.create(kind="demo.sleep", owner=user),
        Job.objects.create(kind="demo.sleep", owner=None),
    )
    inactive = django_user_model.objects.create_user(username="gone", is_active=False)
    inactive_headers = _auth(inactive)
    revoked = _auth(other_user)
    Token.objects.filter(user=other_user).delete()
    key = Token.objects.get_or_create(user=user)[0].key
    path = f"/api/v1/jobs/{mine.id}"
    _compare(
        [
            ("GET", path, _auth(user), True),
            ("GET", path, _auth(staff_user), True),
            ("GET", f"/api/v1/jobs/{system.id}", _auth(staff_user), True),
            ("GET", f"/api/v1/jobs/{system.id}", _auth(user), True),  # 404
            ("GET", path, _auth(django_user_model.objects.create_user(username="eve")), True),
            ("GET", path, inactive_headers, False),  # 401
            ("GET", path, revoked, False),  # 401: its token was deleted
            ("GET", path, [("Authorization", "Token " + "0" * 40)], False),
            ("GET", path, [("Authorization", f"token   {key}")], True),
            ("GET", path, [("Authorization", f"Bearer {key}")], False),
            ("GET", path, [("Authorization", "Token")], False),
            ("GET", path, [("Authorization", f"Token {key} {key}")], False),
            ("GET", path, [("Authorization", f"Token {key}x")], False),
            ("GET", path, [("Authorization", f"Token {key}"), ("Authorization", "Token x")], False),
            ("GET", path, [], False),
        ]
    )


def test_ids_and_paths(user):
    job = Job.objects.create(kind="demo.sleep", owner=user)
    missing = "6f1c0b5e-8a55-4d4e-9d3a-6a3f8c1b2e77"
    _compare(
        [
            ("GET", f"/api/v1/jobs/{missing}", _auth(user), True),  # 404
            ("GET", f"/api/v1/jobs/{str(job.id).upper()}", _auth(user), True),
            ("GET", f"/api/v1/jobs/{job.id.hex}", _auth(user), True),
            ("GET", f"/api/v1/jobs/{{{job.id}}}", _auth(user), True),
            ("GET", f"/api/v1/jobs/urn:uuid:{job.id}", _auth(user), True),
            ("GET", "/api/v1/jobs/not-a-uuid", _auth(user), False),
            ("GET", "/api/v1/jobs/bulk", _auth(user), False),
            ("GET", "/api/v1/jobs/", _auth(user), False),
            ("GET", f"/api/v1/jobs/{job.id}/", _auth(user), False),
            ("GET", f"/api/v1/jobs/{job.id}?wait=0", _auth(user), False),
            ("GET", f"/api/v1/jobs/{job.id}?format=json", _auth(user), False),
            ("GET", f"/api/v1/jobs/{job.id}/events/x", _auth(user), False),
            ("POST", f"/api/v1/jobs/{job.id}", _auth(user), False),
            ("OPTIONS", f"/api/v1/jobs/{job.id}", _auth(user), False),
        ]
    )


def test_request_header_variants_read_alike_and_the_ones_that_matter_go_to_django(user):
    job = Job.objects.create(kind="demo.sleep", owner=user)
    path, etag = f"/api/v1/jobs/{job.id}", f'"{job.id.hex}-1"'
    _compare(
        [
            ("GET", path, _auth(user, Accept="application/json, */*"), True),
            ("GET", path, _auth(user, Accept="application/json; indent=4"), False),
            ("GET", path, _auth(user, Accept="text/html"), False),  # 406
            ("GET", path, _auth(user, Host="localhost:8000"), True),  # links on that host
            ("GET", path, _auth(user, Host="evil.example"), False),  # 400
            ("GET", path, _auth(user, **{"X-Forwarded-Proto": "https"}), True),
            ("GET", path, _auth(user, Cookie="sessionid=x"), False),
            ("GET", path, _auth(user, **{"Content-Length": "2"}), False),
            ("GET", path, _auth(user, **{"If_None_Match": "*"}), True),  # Django drops it
            ("GET", path, [*_auth(user), ("X-Request-ID", "second")], True),
            ("GET", path, [*_auth(user), ("If-None-Match", '"x"'), ("If-None-Match", etag)], True),
        ]
    )


def test_a_fresh_request_id_when_none_is_given(user):
    job = Job.objects.create(kind="demo.sleep", owner=user)
    headers = [("Authorization", f"Token {Token.objects.create(user=user).key}")]

    async def scenario() -> tuple:
        fast = FastRead(ASGIHandler())
        try:
            return await _ask(fast, "GET", f"/api/v1/jobs/{job.id}", headers), fast.served
        finally:
            await fast.aclose()

    (status, raw, _), served = asyncio.run(scenario())
    request_ids = [value for name, value in raw if name.lower() == b"x-request-id"]
    assert (status, served) == (200, 1)
    assert len(request_ids) == 1
    assert len(request_ids[0]) == 32


@pytest.mark.parametrize(
    "changed",
    [
        {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
         "SECURE_HSTS_SECONDS": 3600, "SECURE_HSTS_PRELOAD": True},
        {"X_FRAME_OPTIONS": "SAMEORIGIN", "SECURE_REFERRER_POLICY": "no-referrer",
         "SECURE_CROSS_ORIGIN_OPENER_POLICY": None, "SECURE_CONTENT_TYPE_NOSNIFF": False},
        {"ALLOWED_HOSTS": ["*"], "USE_X_FORWARDED_HOST": True},
    ],
)  # fmt: skip
def test_security_settings_apply_alike(user, changed):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}
    with override_settings(**changed):
        _compare(
            [
                ("GET", path, _auth(user), True),
                ("GET", path, _auth(user, **forwarded), True),
                (
                    "GET",
                    path,
                    _auth(user, Host="other.example:8443"),
                    "*" in changed.get("ALLOWED_HOSTS", []),
                ),
            ]
        )


def test_an_https_redirect_goes_to_django(user):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    with override_settings(
        SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
    ):
        _compare(
            [
                ("GET", path, _auth(user), False),  # 301 to https
                ("GET", path, _auth(user, **{"X-Forwarded-Proto": "https"}), True),
            ]
        )


@pytest.mark.parametrize(
    "changed",
    [
        {"MIDDLEWARE": [*MIDDLEWARE, "django.middleware.http.ConditionalGetMiddleware"]},
        {"MIDDLEWARE": MIDDLEWARE[:-1]},
        {"OFFLOAD_FAST_READ": False},
        {"CSRF_USE_SESSIONS": True},
        {"FORCE_SCRIPT_NAME": "/offload"},
        {"DISALLOWED_USER_AGENTS": []},  # no effect: the fast path stays on
    ],
)
def test_settings_it_does_not_reproduce_turn_it_off(user, changed):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    stays_on = changed == {"DISALLOWED_USER_AGENTS": []}
    with override_settings(**changed):
        _compare([("GET", path, _auth(user), stays_on)])


def test_a_disallowed_user_agent_goes_to_django(user):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    with override_settings(DISALLOWED_USER_AGENTS=[re.compile("evilbot")]):
        _compare(
            [
                ("GET", path, _auth(user, **{"User-Agent": "evilbot/1"}), False),  # 403
                ("GET", path, _auth(user, **{"User-Agent": "goodbot/1"}), True),
            ]
        )


def test_a_deleted_token_or_a_deactivated_user_stops_at_once(user, staff_user, other_user):
    """No cache: each read asks the database, so a change counts from the next request."""
    theirs = Job.objects.create(kind="demo.sleep", owner=other_user)
    staff_path = f"/api/v1/jobs/{theirs.id}"
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    headers, staff_headers = _auth(user), _auth(staff_user)

    async def scenario() -> list[tuple[int, int]]:
        fast = FastRead(ASGIHandler())
        seen = []

        async def read(path: str, headers: list) -> None:
            status = (await _ask(fast, "GET", path, headers))[0]
            seen.append((status, fast.served))

        try:
            await read(path, headers)
            await sync_to_async(Token.objects.filter(user=user).delete)()
            await read(path, headers)
            await read(staff_path, staff_headers)
            await sync_to_async(type(staff_user).objects.filter(id=staff_user.id).update)(
                is_staff=False
            )
            await read(staff_path, staff_headers)
            await sync_to_async(type(staff_user).objects.filter(id=staff_user.id).update)(
                is_active=False
            )
            await read(staff_path, staff_headers)
        finally:
            await fast.aclose()
        return seen

    assert asyncio.run(scenario()) == [(200, 1), (401, 1), (200, 2), (404, 3), (401, 3)]


def test_a_read_is_one_database_round_trip(user, monkeypatch):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    headers = _auth(user)
    statements: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counting(self, query, params=None, **kwargs):
        statements.append(str(query))
        return await execute(self, query, params, **kwargs)

    async def scenario() -> list[int]:
        fast = FastRead(ASGIHandler())
        try:
            await _ask(fast, "GET", path, headers)  # opens the pool
            statements.clear()
            monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
            return [(await _ask(fast, "GET", path, headers))[0] for _ in range(5)]
        finally:
            monkeypatch.undo()
            await fast.aclose()

    assert asyncio.run(scenario()) == [200] * 5
    # A connection the pool opens meanwhile may set its time zone once; each read is one query.
    reads = [sql for sql in statements if not sql.startswith("SET TIME ZONE")]
    assert len(reads) == 5, statements
    assert reads[0].startswith("SELECT")


def test_body_is_the_serializers_json(user):
    """Bytes are compared above; here the body is also read back as the job it shows."""
    job = _jobs(user)[1]
    headers = _auth(user)

    async def scenario() -> tuple[bytes, int]:
        fast = FastRead(ASGIHandler())
        try:
            return (await _ask(fast, "GET", f"/api/v1/jobs/{job.id}", headers))[2], fast.served
        finally:
            await fast.aclose()

    content, served = asyncio.run(scenario())
    body = json.loads(content)
    assert served == 1
    assert body["progress"] == {
        "percent": 42.5,
        "current": 17,
        "total": 40,
        "message": "row 17 of 40",
    }
    assert body["started_at"] == "2026-03-01T12:30:15.123456Z"
    assert body["links"]["cancel"] == f"http://127.0.0.1:8000/api/v1/jobs/{job.id}/cancel"


def test_an_error_in_the_fast_path_leaves_the_answer_to_django(user, monkeypatch, caplog):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("jobs.api.fastread.job_representation", broken)
    _compare([("GET", path, _auth(user), False)])
    assert "fast path failed" in caplog.text


def test_a_database_failure_leaves_reads_to_django_for_a_while(user, monkeypatch):
    path = f"/api/v1/jobs/{Job.objects.create(kind='demo.sleep', owner=user).id}"
    headers = _auth(user)
    lookups = []

    async def refused(self, key, job_id):
        lookups.append(job_id)
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(FastRead, "_lookup", refused)

    async def scenario() -> list[int]:
        fast = FastRead(ASGIHandler())
        answers = [(await _ask(fast, "GET", path, headers))[0] for _ in range(3)]
        return [*answers, fast.served]

    assert asyncio.run(scenario()) == [200, 200, 200, 0]
    assert len(lookups) == 1  # paused after the failure: Django answered the next two
