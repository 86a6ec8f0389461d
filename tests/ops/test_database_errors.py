"""A web process whose database refuses connections answers 503 with a clear JSON error and a
`Retry-After`, never a 500. Each case is a real refusal by a real server (or no server):
nothing here stops or restarts the shared PostgreSQL."""

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from django.conf import settings

from tests.support import WebServer, free_port, process_env

pytestmark = pytest.mark.integration


def admin_dsn() -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/postgres"  # noqa: E501


def server_url(database: str, user: str = "") -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{user or db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{database}"  # noqa: E501


@pytest.fixture
def scratch() -> Iterator[dict]:
    """A scratch database (and role) of this test's own, dropped afterwards."""
    name = f"offload_scratch_{uuid.uuid4().hex[:8]}"
    role = f"{name}_user"
    held: list[psycopg.Connection] = []
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        try:
            yield {"name": name, "role": role, "admin": admin, "held": held}
        finally:
            for conn in held:
                conn.close()
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true CONNECTION LIMIT -1')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def database_url_for(case: str, scratch: dict) -> str:
    if case == "server down":
        return f"postgres://postgres@127.0.0.1:{free_port()}/offload"  # nothing listens there
    if case == "no such database":
        return server_url(f"{scratch['name']}_missing")
    if case == "not accepting connections":
        scratch["admin"].execute(f'ALTER DATABASE "{scratch["name"]}" ALLOW_CONNECTIONS false')
        return server_url(scratch["name"])
    if case == "too many clients":
        # The role may hold one connection to the database, and this test holds it.
        scratch["admin"].execute(f'ALTER DATABASE "{scratch["name"]}" CONNECTION LIMIT 1')
        url = server_url(scratch["name"], scratch["role"])
        scratch["held"].append(psycopg.connect(url.replace("postgres://", "postgresql://")))
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            psycopg.connect(url.replace("postgres://", "postgresql://"))
        return url
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["server down", "no such database", "not accepting connections", "too many clients"]
)
def test_database_refusal_is_a_503_with_a_clear_message(case, scratch, log_dir):
    url = database_url_for(case, scratch)
    web = WebServer(log_dir=log_dir, env=process_env(DATABASE_URL=url)).start()
    token = {"Authorization": "Token 0123456789abcdef0123456789abcdef01234567"}
    try:
        answers = {
            "list (DRF view)": httpx.get(f"{web.url}/api/v1/jobs", headers=token, timeout=30),
            "submit (DRF view)": httpx.post(
                f"{web.url}/api/v1/jobs", json={"kind": "demo.sleep"}, headers=token, timeout=30
            ),
            "status (async view)": httpx.get(
                f"{web.url}/api/v1/jobs/{uuid.uuid4()}", headers=token, timeout=30
            ),
            "admin (Django view)": httpx.get(
                f"{web.url}/admin/", cookies={"sessionid": "x" * 32}, timeout=30
            ),
        }
        ready = httpx.get(f"{web.url}/readyz", timeout=30)
        alive = httpx.get(f"{web.url}/healthz", timeout=30)
    finally:
        web.stop()
    for where, response in answers.items():
        assert response.status_code == 503, (where, response.status_code, response.text[:500])
        error = response.json()["error"]
        assert error["code"] == "database_unavailable", where
        assert "database is unavailable" in error["message"], where
        assert response.headers["Retry-After"] == "5", where
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert alive.status_code == 200  # liveness does not depend on the database
    log = web.log_path.read_text()
    assert "database unavailable" in log
    assert "Internal Server Error" not in log


@pytest.mark.django_db(transaction=True)
def test_a_pooled_web_process_holds_at_most_its_pool_size(log_dir, user):
    """DATABASE_POOL_MAX_SIZE=2: thirty concurrent requests are served over two connections."""
    import concurrent.futures

    from tests.conftest import token_for
    from tests.support import database_url

    name = f"offload-pool-{uuid.uuid4().hex[:8]}"
    env = process_env(
        DATABASE_URL=f"{database_url()}?application_name={name}",
        DATABASE_POOL_MAX_SIZE="2",
        DATABASE_POOL_TIMEOUT="20",
    )
    headers = {"Authorization": f"Token {token_for(user)}"}
    web = WebServer(log_dir=log_dir, env=env).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.get(f"{web.url}/api/v1/jobs", headers=headers, timeout=60),
                    range(30),
                )
            )
        with psycopg.connect(admin_dsn()) as admin:
            held = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
            ).fetchone()[0]
    finally:
        web.stop()
    assert [a.status_code for a in answers] == [200] * 30
    assert 1 <= held <= 2
