"""Tests: the real PostgreSQL and RabbitMQ, named by DATABASE_URL and CELERY_BROKER_URL."""

import os
from pathlib import Path

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offload")
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

from config.settings.base import *  # noqa: F403
from config.settings.base import VAR_DIR, env

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
# The test session empties this folder before it starts (tests/conftest.py).
OFFLOAD_METRICS_DIR = VAR_DIR / "metrics-test"

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY", default="offload-test-key")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Files written by tests and their workers stay apart from the quickstart's.
MEDIA_ROOT = Path(env("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "test-media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Webhooks in tests: a short retry schedule and timeout, and one loopback address opened
# for the test receivers (127.0.0.1 stays refused: the canary listens there).
OFFLOAD_WEBHOOK_RETRY_SCHEDULE = [
    float(step) for step in env.list("OFFLOAD_WEBHOOK_RETRY_SCHEDULE", default=["0.2", "0.4"])
]
OFFLOAD_WEBHOOK_TIMEOUT = env.float("OFFLOAD_WEBHOOK_TIMEOUT", default=2.0)
OFFLOAD_WEBHOOK_ALLOWED_HOSTS = env.list("OFFLOAD_WEBHOOK_ALLOWED_HOSTS", default=["127.0.0.2"])
OFFLOAD_SSE_KEEPALIVE = env.float("OFFLOAD_SSE_KEEPALIVE", default=1.0)
# Email in tests: each test starts its own SMTP server and passes its port to its workers;
# retries wait a fraction of a second.
OFFLOAD_EMAIL_RETRY_BACKOFF = env.float("OFFLOAD_EMAIL_RETRY_BACKOFF", default=0.2)
OFFLOAD_EMAIL_RETRY_MAX = env.float("OFFLOAD_EMAIL_RETRY_MAX", default=1.0)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
OFFLOAD_EMAIL_CAMPAIGN_POLL = env.float("OFFLOAD_EMAIL_CAMPAIGN_POLL", default=0.3)
