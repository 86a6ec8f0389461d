"""Helpers shared by the test areas: waiting on conditions and running real processes."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def database_url() -> str:
    """The URL of the database the tests use right now (the test database)."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (worker, beat, web) that shares the test database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class CeleryProcess:
    """What a real Celery process started by a test can be asked: its log, a crash, a stop.
    Subclasses set `log_path` and start `process` in their own process group."""

    log_path: Path
    process: subprocess.Popen | None
    _log: Any

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash of its machine would."""
        import signal

        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self.process = None


class Worker(CeleryProcess):
    """A real `celery worker` process on the test broker and database."""

    def __init__(
        self,
        *,
        queues: str = "default,bulk,notifications",
        concurrency: int | None = 2,
        log_dir: Path,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """`concurrency` None: no `-c`, the worker picks its process count itself."""
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = log_dir / f"worker-{self.name.split('@')[0]}.log"
        self.args = [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            *(["-c", str(concurrency)] if concurrency is not None else []),
            "-n",
            self.name,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
            *extra_args,
        ]
        self.env = env or process_env()
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60.0) -> "Worker":
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() takes the children too
        )
        self._ready_from = self.log_path.stat().st_size
        wait_for(self.ready, timeout=timeout, interval=0.2, what=f"worker {self.name} ready")
        return self

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}: {self.log()}")
        return b" ready." in self.log_path.read_bytes()[self._ready_from :]

    def children(self) -> list[int]:
        """The pool's child processes (what a crash of a task takes down)."""
        try:
            path = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
            with open(path) as children:
                return [int(pid) for pid in children.read().split()]
        except FileNotFoundError:
            return []


class Beat(CeleryProcess):
    """A real `celery beat` process (Offload's scheduler) on the test broker and database."""

    def __init__(self, *, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = f"beat-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.name}.log"
        self.args = [
            str(BIN / "celery"), "-A", "config", "beat", "-l", "info",
            "--scheduler", "jobs.schedules.scheduler:OffloadScheduler",
        ]  # fmt: skip
        self.env = env or process_env()
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60.0) -> "Beat":
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self.ready, timeout=timeout, interval=0.2, what=f"{self.name} started")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"beat exited with {self.process.returncode}: {self.log()}")
        return b"beat: Starting" in self.log_path.read_bytes()


def queues_purge() -> None:
    """Drop messages left on the test broker by an earlier run; a queue declared by an
    older version with other arguments is deleted and declared anew."""
    from amqp.exceptions import PreconditionFailed

    from config.celery_app import app
    from jobs import deadletters

    with app.connection_for_write() as conn:
        channel = conn.channel()
        deadletters.dead_letter_declare(channel)
        deadletters.dead_letter_queue()(channel).purge()
        for queue in settings.CELERY_TASK_QUEUES:
            try:
                queue(channel).declare()
            except PreconditionFailed:
                channel = conn.channel()
                channel.queue_delete(queue.name)
                queue(channel).declare()
            queue(channel).purge()


def table_rows(model: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {model._meta.db_table}")  # noqa: S608
        return cursor.fetchone()[0]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """A real uvicorn process serving the ASGI app on a free loopback port."""

    def __init__(self, *, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"web-{self.port}.log"
        self.env = env or process_env()
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60.0) -> "WebServer":
        import httpx

        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(BIN / "python"), "-m", "uvicorn", "config.asgi:application",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"web server exited: {self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=timeout, interval=0.2, what="web server")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._log.close()
        self.process = None
