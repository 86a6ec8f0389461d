"""The quickstart: everything Offload needs in one process group on a laptop."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from jobs import metrics

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - the quickstart's documented demo login


def demo_user_ensure() -> tuple[object, str]:
    """The demo user (staff, so the admin opens too) and its API token."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


@dataclass
class Service:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None


def services_build(*, host: str, port: int) -> list[Service]:
    python = sys.executable
    celery = str(Path(python).parent / "celery")
    return [
        Service(
            "web",
            [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
            ],
        ),
        Service(
            "worker",
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                "default,bulk,notifications",
                "-c",
                os.environ.get("OFFLOAD_WORKER_CONCURRENCY", "2"),
                "-l",
                "info",
                "-n",
                "quickstart@%h",
            ],
        ),
        Service("flower", [python, "manage.py", "flower"]),
        Service(
            "beat",
            [
                celery,
                "-A",
                "config",
                "beat",
                "-l",
                "info",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        ),
    ]


def services_run(services: list[Service]) -> int:
    """Start every service; stop all of them when one exits or on Ctrl-C / SIGTERM."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    metrics.metrics_dir_empty()  # a fresh start of every process of this host
    for service in services:
        service.process = subprocess.Popen(service.args, cwd=settings.BASE_DIR)  # noqa: S603
    status = 0
    while not stopping:
        for service in services:
            code = service.process.poll()
            if code is not None:
                print(f"offload: {service.name} exited with {code}; stopping.", flush=True)
                status = code or 1
                stopping = True
        time.sleep(0.2)
    for service in services:
        if service.process.poll() is None:
            service.process.terminate()
    for service in services:
        try:
            service.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.process.kill()
    return status
