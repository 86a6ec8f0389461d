"""Production settings: no defaults for secrets and URLs, and `check --deploy` is clean."""

import os
import secrets
import subprocess

import pytest

from tests.support import BIN, ROOT

REQUIRED = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DATABASE_URL": "postgres://offload@db.internal:5432/offload",
    "CELERY_BROKER_URL": "amqp://offload:pw@mq.internal:5672//",
    "DJANGO_ALLOWED_HOSTS": "jobs.example.com",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings.production", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_without_a_warning():
    run = manage("check", "--deploy", "--fail-level", "WARNING", **REQUIRED)

    assert run.returncode == 0, run.stderr
    assert "no issues" in run.stdout


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_production_refuses_to_start_without(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}

    run = manage("check", **env)

    assert run.returncode != 0
    assert f"Set the {missing} environment variable" in run.stderr
