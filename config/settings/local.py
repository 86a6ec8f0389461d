"""The quickstart: SQLite and the filesystem broker under var/, nothing else needed."""

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="offload-local-development-key-not-for-production")
WHITENOISE_USE_FINDERS = True

LOG_FORMAT = env("LOG_FORMAT", default="console")
LOGGING["handlers"]["default"]["formatter"] = LOG_FORMAT

# The quickstart's Flower uses the demo login; Flower's task view needs task events.
OFFLOAD_FLOWER_BASIC_AUTH = env.list("OFFLOAD_FLOWER_BASIC_AUTH", default=["demo:demo"])
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=True)

# The quickstart prints emails on the worker's console instead of sending them.
if not env("EMAIL_URL", default=""):
    EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
