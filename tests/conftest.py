import os
from contextlib import contextmanager

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support import Worker, queues_purge


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"database: {settings.DATABASES['default']['NAME']}",
        f"broker: {settings.CELERY_BROKER_URL.split('@')[-1]}",
        f"CI: {os.environ.get('CI', '')}",
    ]


# Two sessions on one machine share the test database (--reuse-db), the broker's queues
# and the test folders: each would read the other's jobs and consume its messages. A
# session holds this PostgreSQL advisory lock from start to end, so a second one waits.
SESSION_LOCK_KEY = 0x0FF10AD
SESSION_LOCK_WAIT = 45 * 60  # seconds; longer than a whole session takes
_session_lock: list = []


def pytest_sessionstart(session: pytest.Session) -> None:
    import psycopg

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        return
    try:
        connection = psycopg.connect(
            host=database["HOST"] or None,
            port=database["PORT"] or None,
            user=database["USER"] or None,
            password=database["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError:
        return  # the tests that need PostgreSQL report it (a failure under CI=true)
    if not connection.execute("SELECT pg_try_advisory_lock(%s)", [SESSION_LOCK_KEY]).fetchone()[0]:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "Another test session holds the test database; waiting up to "
                f"{SESSION_LOCK_WAIT // 60} minutes for it to end."
            )
        connection.execute(f"SET lock_timeout = '{SESSION_LOCK_WAIT}s'")
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", [SESSION_LOCK_KEY])
        except psycopg.errors.LockNotAvailable:
            connection.close()
            raise pytest.UsageError(
                "another test session has held the test database for "
                f"{SESSION_LOCK_WAIT // 60} minutes; stop it and run again"
            ) from None
    _session_lock.append(connection)  # held until the process ends


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _session_lock:
        _session_lock.pop().close()


@pytest.fixture(scope="session", autouse=True)
def _metrics_dir_empty():
    """Counters start from zero each session; nothing has recorded a metric yet."""
    from jobs.metrics import metrics_dir_empty

    metrics_dir_empty()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-pass-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="bob-pass-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-pass-123", is_staff=True, is_superuser=True
    )


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    return _client_for(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


# The session worker while it runs (the `worker` fixture starts it on first use).
_session_workers: list[Worker] = []


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, log_dir):
    """One real Celery worker process for the session, on the test database and broker."""
    with django_db_blocker.unblock():
        queues_purge()
    process = Worker(log_dir=log_dir).start()
    _session_workers.append(process)
    yield process
    _session_workers.remove(process)
    process.stop()


@pytest.fixture(scope="session")
def web(django_db_setup, django_db_blocker, log_dir):
    """One real uvicorn process (the ASGI app) for the session, on the test database."""
    from tests.support import WebServer

    server = WebServer(log_dir=log_dir).start()
    yield server
    server.stop()


def token_for(user) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


@contextmanager
def _consumers_paused(worker: Worker):
    import socket

    from config.celery_app import app

    name = worker.name.replace("%h", socket.gethostname())
    queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
    for queue in queues:
        app.control.cancel_consumer(queue, destination=[name], reply=True)
    queues_purge()
    try:
        yield
    finally:
        queues_purge()
        for queue in queues:
            app.control.add_consumer(queue, destination=[name], reply=True)


@pytest.fixture
def worker_paused(worker):
    """The session worker stops consuming (its consumers are cancelled) for one test, so
    messages stay on the broker or go only to a worker the test starts itself."""
    with _consumers_paused(worker):
        yield


@pytest.fixture
def no_worker():
    """Nothing consumes the test's messages: the session worker, if an earlier test started
    it, is paused as by `worker_paused`; otherwise there is none to pause. For tests that
    check what stays queued."""
    if not _session_workers:
        yield
        return
    with _consumers_paused(_session_workers[0]):
        yield
