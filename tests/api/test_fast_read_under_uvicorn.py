"""The status read's fast path under a real uvicorn: it answers what a second server with
`OFFLOAD_FAST_READ=False` (Django alone) answers, its request log lines say it answered, and
hostile requests (huge or garbage tokens, SQL in ids, unicode, long paths) never get a 500."""

import json
import socket
from urllib.parse import quote

import pytest
from rest_framework.authtoken.models import Token

from jobs.models import Job
from tests.support import WebServer, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, log_dir):
    fast = WebServer(log_dir=log_dir).start()
    plain = WebServer(log_dir=log_dir, env=process_env(OFFLOAD_FAST_READ="False")).start()
    yield fast, plain
    fast.stop()
    plain.stop()


def _raw(port: int, target: bytes, headers: list[bytes], method: bytes = b"GET") -> tuple:
    """One request as exact bytes; (status, headers without Date, body)."""
    request = b"\r\n".join(
        [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    fields = [tuple(line.split(b": ", 1)) for line in lines]
    return int(status_line.split()[1]), [f for f in fields if f[0].lower() != b"date"], body


def _fast_lines(server: WebServer) -> list[dict]:
    lines = server.log_path.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [entry for entry in entries if entry.get("fast_read")]


def test_same_answers_as_django_alone_and_the_log_says_who_answered(
    servers, user, other_user, django_user_model
):
    fast, plain = servers
    key = Token.objects.create(user=user).key.encode()
    job = Job.objects.create(kind="demo.sleep", owner=user, params={"n": "é\u2028"})
    theirs = Job.objects.create(kind="demo.sleep", owner=other_user)
    auth, rid = b"Authorization: Token " + key, b"X-Request-ID: over-http"
    etag = f'If-None-Match: "{job.id.hex}-1"'.encode()
    path = f"/api/v1/jobs/{job.id}".encode()
    requests = [  # (method, target, headers, answered by the fast path)
        (b"GET", path, [auth, rid], True),
        (b"HEAD", path, [auth, rid], True),
        (b"GET", path, [auth, rid, etag], True),
        (b"GET", f"/api/v1/jobs/{theirs.id}".encode(), [auth, rid], True),
        (b"GET", b"/api/v1/jobs/6f1c0b5e-8a55-4d4e-9d3a-6a3f8c1b2e77", [auth, rid], True),
        (b"GET", b"/api/v1/jobs/nope", [auth, rid], False),
        (b"GET", path, [b"Authorization: Token " + b"0" * 40, rid], False),
        (b"GET", path, [rid], False),
    ]
    fast_before = len(_fast_lines(fast))

    for method, target, headers, _ in requests:
        answer = _raw(fast.port, target, headers, method)
        assert answer == _raw(plain.port, target, headers, method), (method, target, headers)
        assert answer[0] < 500

    expected = sum(1 for *_, served in requests if served)
    wait_for(lambda: len(_fast_lines(fast)) - fast_before >= expected, what="fast read logs")
    assert len(_fast_lines(fast)) - fast_before == expected
    assert _fast_lines(plain) == []


HOSTILE_IDS = [
    "' OR '1'='1",
    "1; DROP TABLE jobs_job; --",
    "%00",
    "%C3%A9",
    "%F0%9D%94%98",
    "%FF%FE",
    "..%2F..%2Fetc%2Fpasswd",
    "6f1c0b5e-8a55-4d4e-9d3a-6a3f8c1b2e77%00",
    "%7B6f1c0b5e-8a55-4d4e-9d3a-6a3f8c1b2e77%7D",
    "a" * 10_000,
]
HOSTILE_TOKENS = [
    b"Token " + b"a" * 60_000,
    b"Token \xff\xfe\xfd",
    b"Token abc\x00def",
    b"Token ' OR '1'='1",
    b"Token " + "é".encode() * 20,
    b"Token\t" + b"0" * 40,
    b"Token " + b"0" * 40 + b" \x01",
    b"\xf0\x9f\x94\x91 " + b"0" * 40,
]


def test_hostile_requests_never_get_a_500(servers, user):
    fast, _ = servers
    auth = b"Authorization: Token " + Token.objects.create(user=user).key.encode()
    job = Job.objects.create(kind="demo.sleep", owner=user)
    answers = {}
    for job_id in HOSTILE_IDS:
        target = f"/api/v1/jobs/{quote(job_id, safe='%')}".encode()
        answers[job_id[:40]] = _raw(fast.port, target, [auth])[0]
    for token in HOSTILE_TOKENS:
        target = f"/api/v1/jobs/{job.id}".encode()
        answers[repr(token[:40])] = _raw(fast.port, target, [b"Authorization: " + token])[0]
    for length in (2_000, 30_000):
        long_path = "/api/v1/jobs/" + quote("ü" * length)
        answers[f"path of {len(long_path)} bytes"] = _raw(fast.port, long_path.encode(), [auth])[0]

    # 400: uvicorn refuses the request (a control byte in a header, a 180 kB path)
    assert {name: status for name, status in answers.items() if status >= 500} == {}
    assert set(answers.values()) <= {400, 401, 404}
    assert _raw(fast.port, f"/api/v1/jobs/{job.id}".encode(), [auth])[0] == 200
