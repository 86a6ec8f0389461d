"""Flower, Celery's monitor, as Offload runs it: never without credentials.

Credentials come from OFFLOAD_FLOWER_BASIC_AUTH ("user:password", several separated by
commas) and travel to Flower in its environment (FLOWER_BASIC_AUTH), not on the command line
where `ps` would show them. Flower keeps task history in memory only (OFFLOAD_FLOWER_MAX_TASKS);
Offload's job list is the durable history. Flower's own `/metrics` and `/healthcheck` answer
without credentials (Flower's design, for Prometheus): keep Flower on a private address.
"""

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def flower_credentials() -> list[str]:
    credentials = [c.strip() for c in settings.OFFLOAD_FLOWER_BASIC_AUTH if c.strip()]
    if not credentials:
        raise ImproperlyConfigured(
            "Flower needs credentials: set OFFLOAD_FLOWER_BASIC_AUTH to user:password "
            "(several separated by commas). It never starts open."
        )
    for credential in credentials:
        user, _, password = credential.partition(":")
        if not user or not password:
            raise ImproperlyConfigured(
                "OFFLOAD_FLOWER_BASIC_AUTH entries are user:password; "
                f"{user or '(empty)'!r} has no password."
            )
    return credentials


def flower_url() -> str:
    prefix = settings.OFFLOAD_FLOWER_URL_PREFIX.strip("/")
    return f"http://{settings.OFFLOAD_FLOWER_ADDRESS}:{settings.OFFLOAD_FLOWER_PORT}/{prefix}"


def flower_exec() -> None:
    """Replace this process with Flower."""
    env = dict(os.environ, FLOWER_BASIC_AUTH=",".join(flower_credentials()))
    celery = str(Path(sys.executable).parent / "celery")
    args = [
        celery, "-A", "config", "flower",
        f"--address={settings.OFFLOAD_FLOWER_ADDRESS}",
        f"--port={settings.OFFLOAD_FLOWER_PORT}",
        f"--url_prefix={settings.OFFLOAD_FLOWER_URL_PREFIX}",
        f"--max_tasks={settings.OFFLOAD_FLOWER_MAX_TASKS}",
    ]  # fmt: skip
    os.execve(celery, args, env)  # noqa: S606 - a fixed program with fixed arguments
