"""Settings shared by every environment.

Every value a deployer may change is read from the environment and listed, with its
default and meaning, in `.env.example`.
"""

from pathlib import Path

import environ
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    env.read_env(str(env_file))
# Where the quickstart keeps its SQLite database, broker folders and files.
VAR_DIR = Path(env("OFFLOAD_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- Applications -----------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_celery_results",
    "jobs",
    "notifications",
    "reports",
]

MIDDLEWARE = [
    "jobs.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: keeps the chain above on one thread under ASGI (see its docstring).
    "config.middleware.SyncChainMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------


def postgres_options(db: dict) -> dict:
    """Connection settings of a PostgreSQL database (also used by production settings).

    Persistent, health-checked connections by default. DATABASE_POOL_MAX_SIZE > 0 gives
    psycopg's connection pool instead: meant for the ASGI web processes, where each request
    runs its sync code on a thread of its own and would otherwise open a new connection;
    never for Celery's prefork workers (a pool's threads do not survive a fork). Each process
    holds at most max_size connections; a request that waits longer than
    DATABASE_POOL_TIMEOUT for one gets a 503."""
    db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    db["CONN_HEALTH_CHECKS"] = True
    if env.bool("DATABASE_SERVER_SIDE_BINDING", default=False):
        db.setdefault("OPTIONS", {})["server_side_binding"] = True
    size = env.int("DATABASE_POOL_MAX_SIZE", default=0)
    if size > 0:
        # Django refuses a pool together with persistent connections or health checks.
        db["CONN_MAX_AGE"] = 0
        db["CONN_HEALTH_CHECKS"] = False
        db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(env.int("DATABASE_POOL_MIN_SIZE", default=1), size),
            "max_size": size,
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
        }
    return db


DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'offload.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the web process read while a worker writes; IMMEDIATE avoids
    # "database is locked" on read-then-write transactions.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"] = postgres_options(DATABASES["default"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Internationalisation and static files ----------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    # Uploads and job outputs: the file system under MEDIA_ROOT by default; any
    # django-storages backend (e.g. storages.backends.s3.S3Storage) by setting.
    "default": {
        "BACKEND": env(
            "DJANGO_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"
        ),
        "OPTIONS": env.json("DJANGO_STORAGE_OPTIONS", default={}),
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/admin/login/"

# Bulk submits carry up to OFFLOAD_BULK_MAX jobs of small params; larger bodies are a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("OFFLOAD_MAX_REQUEST_BYTES", default=4 * 1024 * 1024)

# --- REST API ---------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["jobs.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Offload API",
    "DESCRIPTION": "Submit background jobs, follow them and get their results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "jobs.api.schema.postprocess",
    ],
}

# --- Celery -----------------------------------------------------------------------

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost//")
BROKER_IS_AMQP = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))

if BROKER_IS_AMQP:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Publisher confirms: a submit returns only after RabbitMQ has the message.
        "confirm_publish": True,
    }
else:
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "control", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A submit must answer quickly when the broker is down (503), not hang retrying.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
# Job messages go out on one kept connection per process (jobs/publishing.py); after this
# many idle seconds it is reopened before use, so a connection a firewall or load balancer
# dropped silently never holds a submit until the confirm timeout.
OFFLOAD_PUBLISH_IDLE_REOPEN = env.float("OFFLOAD_PUBLISH_IDLE_REOPEN", default=60.0)
CELERY_BROKER_POOL_LIMIT = env.int("CELERY_BROKER_POOL_LIMIT", default=10)
# Messages Celery itself publishes (a retry's, beat's maintenance tasks) get one immediate
# retry on a fresh connection: a pooled connection left over from a broker restart fails
# on first use, and a broker that is really down fails both tries within the connect
# timeout. Job submits publish through jobs/publishing.py, which does the same.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}

CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True

JOB_MAX_PRIORITY = 9
# Messages a queue rejects (a failed or dead late-ack job, a poison message) are
# dead-lettered to this fanout exchange and kept in the queue of the same name.
OFFLOAD_DEAD_LETTER_EXCHANGE = "offload.dead"
OFFLOAD_DEAD_LETTER_MAX = env.int("OFFLOAD_DEAD_LETTER_MAX", default=100_000)
_queue_args = {"x-max-priority": JOB_MAX_PRIORITY + 1}
if BROKER_IS_AMQP:
    _queue_args["x-dead-letter-exchange"] = OFFLOAD_DEAD_LETTER_EXCHANGE
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=_queue_args)
    for name in ("default", "bulk", "notifications")
]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_DEFAULT_EXCHANGE = "default"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
CELERY_TASK_DEFAULT_PRIORITY = 0
CELERY_TASK_QUEUE_MAX_PRIORITY = JOB_MAX_PRIORITY + 1
CELERY_TASK_DEFAULT_DELIVERY_MODE = "persistent"
CELERY_TASK_ACKS_LATE = False  # set per kind: late acks only for idempotent kinds
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
# Workers that consume these queues of long jobs reserve this many messages per process
# instead (see config/celery_app.py, LongJobWorker).
OFFLOAD_LONG_JOB_QUEUES = env.list("OFFLOAD_LONG_JOB_QUEUES", default=["bulk"])
OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER = env.int("OFFLOAD_LONG_JOB_PREFETCH_MULTIPLIER", default=1)
# Processes of such a worker when its command gives no --concurrency (None: one more than the
# CPUs, so that a job's database waits do not leave a core idle).
OFFLOAD_LONG_JOB_CONCURRENCY = env.int("OFFLOAD_LONG_JOB_CONCURRENCY", default=None)
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=None)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=None)
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "jobs.schedules.scheduler:OffloadScheduler"
# Keep database connections across tasks instead of reconnecting for every task
# (Celery's Django fixup closes them after each task unless this is set).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# --- Offload ----------------------------------------------------------------------

# Largest params document a job may carry, in bytes of its JSON encoding.
OFFLOAD_MAX_PARAMS_BYTES = env.int("OFFLOAD_MAX_PARAMS_BYTES", default=64 * 1024)
# Most jobs one bulk submit may carry.
OFFLOAD_BULK_MAX = env.int("OFFLOAD_BULK_MAX", default=1000)
# Longest `?wait=` a status read may long-poll for, in seconds.
OFFLOAD_LONG_POLL_MAX = env.int("OFFLOAD_LONG_POLL_MAX", default=30)
# The status read's fast path (jobs/api/fastread.py): `GET /api/v1/jobs/{id}` with a token,
# answered before Django with one query (PostgreSQL only), and the connections each web
# process keeps for it on top of Django's own.
OFFLOAD_FAST_READ = env.bool("OFFLOAD_FAST_READ", default=True)
OFFLOAD_FAST_READ_POOL_SIZE = env.int("OFFLOAD_FAST_READ_POOL_SIZE", default=4)
# Least time between two progress writes of one job, in seconds.
OFFLOAD_PROGRESS_INTERVAL = env.float("OFFLOAD_PROGRESS_INTERVAL", default=0.25)
# A run still going after this many seconds is marked running (shorter runs write once:
# their running move is folded into the final write). A quarter second is below what a
# person watching a job notices, and spares a write and an event per run shorter than it.
OFFLOAD_RUNNING_MARK_AFTER = env.float("OFFLOAD_RUNNING_MARK_AFTER", default=0.25)
# How long a worker retries a lifecycle read or write while the database is unreachable.
OFFLOAD_DB_RETRY_SECONDS = env.float("OFFLOAD_DB_RETRY_SECONDS", default=60.0)
# How often a long run's heartbeat is renewed, in seconds.
OFFLOAD_HEARTBEAT_INTERVAL = env.float("OFFLOAD_HEARTBEAT_INTERVAL", default=10.0)
# --- Uploads and data jobs -------------------------------------------------------

# Largest upload per type decided from the content, in bytes (413 above).
OFFLOAD_UPLOAD_MAX_BYTES = {
    "image": env.int("OFFLOAD_UPLOAD_MAX_IMAGE_BYTES", default=25 * 1024 * 1024),
    "csv": env.int("OFFLOAD_UPLOAD_MAX_CSV_BYTES", default=512 * 1024 * 1024),
}
# Image decoders that may be opened (Pillow format names); anything else is refused.
OFFLOAD_IMAGE_DECODERS = env.list("OFFLOAD_IMAGE_DECODERS", default=["JPEG", "PNG", "WEBP"])
# Images with more pixels than this are refused before decoding (decompression bombs).
OFFLOAD_IMAGE_MAX_PIXELS = env.int("OFFLOAD_IMAGE_MAX_PIXELS", default=50_000_000)
# Rows one CSV import writes per batch (one transaction, one progress step).
OFFLOAD_CSV_BATCH_ROWS = env.int("OFFLOAD_CSV_BATCH_ROWS", default=10_000)
# Longest physical line and longest field of an imported CSV, in bytes.
OFFLOAD_CSV_MAX_LINE_BYTES = env.int("OFFLOAD_CSV_MAX_LINE_BYTES", default=1024 * 1024)
# Days uploads and job-made files are kept before the cleanup kind deletes them.
OFFLOAD_RETENTION_UPLOADS_DAYS = env.int("OFFLOAD_RETENTION_UPLOADS_DAYS", default=30)
OFFLOAD_RETENTION_FILES_DAYS = env.int("OFFLOAD_RETENTION_FILES_DAYS", default=30)
# Reports: the longest date range one report may cover (days), how long a signed download
# link stays valid (seconds), and rows read per round trip while exporting.
OFFLOAD_REPORT_MAX_RANGE_DAYS = env.int("OFFLOAD_REPORT_MAX_RANGE_DAYS", default=366)
OFFLOAD_REPORT_LINK_TTL_SECONDS = env.int("OFFLOAD_REPORT_LINK_TTL_SECONDS", default=24 * 3600)
OFFLOAD_REPORT_CHUNK_ROWS = env.int("OFFLOAD_REPORT_CHUNK_ROWS", default=5000)

# Where job events go: "amqp" (the offload.events exchange) or "none".
OFFLOAD_EVENTS_BACKEND = env("OFFLOAD_EVENTS_BACKEND", default="amqp" if BROKER_IS_AMQP else "none")
OFFLOAD_EVENTS_EXCHANGE = "offload.events"
# Events a process may hold for its sending thread (more are dropped), and the seconds it
# drops its events after a failed publish before it connects to the broker again.
OFFLOAD_EVENTS_QUEUE_MAX = env.int("OFFLOAD_EVENTS_QUEUE_MAX", default=10_000)
OFFLOAD_EVENTS_RETRY_AFTER = env.float("OFFLOAD_EVENTS_RETRY_AFTER", default=5.0)
# Seconds of silence after which an SSE stream sends a keep-alive comment.
OFFLOAD_SSE_KEEPALIVE = env.float("OFFLOAD_SSE_KEEPALIVE", default=15.0)
# Without the events exchange (OFFLOAD_EVENTS_BACKEND=none): how often each web process
# reads the versions of the jobs its streams watch (one query for all of them).
OFFLOAD_EVENTS_POLL_INTERVAL = env.float("OFFLOAD_EVENTS_POLL_INTERVAL", default=0.5)
# Events one stream may have waiting; a client that falls further behind is disconnected.
OFFLOAD_EVENTS_SUBSCRIBER_BUFFER = env.int("OFFLOAD_EVENTS_SUBSCRIBER_BUFFER", default=1000)

# --- Webhooks ---------------------------------------------------------------------

# Seconds between a failed attempt and the next (each +-20 % jitter); then it has failed.
OFFLOAD_WEBHOOK_RETRY_SCHEDULE = [
    float(step)
    for step in env.list(
        "OFFLOAD_WEBHOOK_RETRY_SCHEDULE",
        default=["5", "300", "1800", "7200", "18000", "36000", "86400"],
    )
]
# Waits up to this many seconds are a Celery countdown; longer ones wait in the database.
OFFLOAD_WEBHOOK_COUNTDOWN_MAX = env.float("OFFLOAD_WEBHOOK_COUNTDOWN_MAX", default=60.0)
# Seconds an attempt waits for the receiver's answer.
OFFLOAD_WEBHOOK_TIMEOUT = env.float("OFFLOAD_WEBHOOK_TIMEOUT", default=15.0)
# Seconds a rotated-out secret keeps signing deliveries.
OFFLOAD_WEBHOOK_SECRET_GRACE = env.int("OFFLOAD_WEBHOOK_SECRET_GRACE", default=24 * 3600)
# Host names, IPs or networks (CIDR) webhooks may reach although they are not public.
OFFLOAD_WEBHOOK_ALLOWED_HOSTS = env.list("OFFLOAD_WEBHOOK_ALLOWED_HOSTS", default=[])
# How often the periodic sweep releases due retries, in seconds.
OFFLOAD_WEBHOOK_SWEEP_SECONDS = env.float("OFFLOAD_WEBHOOK_SWEEP_SECONDS", default=30.0)

# Flower (`manage.py flower`): never started without credentials ("user:password", comma-
# separated); it listens on this address and port under this URL prefix.
OFFLOAD_FLOWER_BASIC_AUTH = env.list("OFFLOAD_FLOWER_BASIC_AUTH", default=[])
OFFLOAD_FLOWER_ADDRESS = env("OFFLOAD_FLOWER_ADDRESS", default="127.0.0.1")
OFFLOAD_FLOWER_PORT = env.int("OFFLOAD_FLOWER_PORT", default=5555)
OFFLOAD_FLOWER_URL_PREFIX = env("OFFLOAD_FLOWER_URL_PREFIX", default="flower")
OFFLOAD_FLOWER_MAX_TASKS = env.int("OFFLOAD_FLOWER_MAX_TASKS", default=10_000)

# --- Metrics ----------------------------------------------------------------------

# Folder shared by every web and worker process of this host for Prometheus counters
# (prometheus-client multiprocess mode); empty it when the host's processes start.
OFFLOAD_METRICS_DIR = Path(env("OFFLOAD_METRICS_DIR", default=str(VAR_DIR / "metrics")))
# /metrics answers a request carrying `Authorization: Bearer <token>` when a token is set,
# and any request from these networks.
OFFLOAD_METRICS_TOKEN = env("OFFLOAD_METRICS_TOKEN", default="")
OFFLOAD_METRICS_ALLOWED_NETWORKS = env.list(
    "OFFLOAD_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]
)

# --- Schedules, delayed jobs, cleanup, reaper --------------------------------------

# Beat leader lease, in seconds: a dead leader is replaced within this (0: no election,
# every beat sends and slot claims alone prevent double runs).
OFFLOAD_BEAT_LEASE_SECONDS = env.float("OFFLOAD_BEAT_LEASE_SECONDS", default=30.0)
# How often a follower beat asks for the lease, in seconds.
OFFLOAD_BEAT_FOLLOWER_POLL = env.float("OFFLOAD_BEAT_FOLLOWER_POLL", default=1.0)
# How often the leading beat releases due delayed jobs and fires due slots, in seconds.
OFFLOAD_DISPATCH_INTERVAL = env.float("OFFLOAD_DISPATCH_INTERVAL", default=0.5)
# A schedule run's lease, in seconds; the run's heartbeat renews it (keep it well above
# OFFLOAD_HEARTBEAT_INTERVAL).
OFFLOAD_SCHEDULE_LEASE_SECONDS = env.float("OFFLOAD_SCHEDULE_LEASE_SECONDS", default=60.0)
# Longest a slot may start late (and its message live) when its schedule sets no expire_seconds.
OFFLOAD_SCHEDULE_GRACE_SECONDS = env.float("OFFLOAD_SCHEDULE_GRACE_SECONDS", default=300.0)
# How far in the past a submitted run_at may be (it then runs at once), in seconds.
OFFLOAD_RUN_AT_PAST_TOLERANCE = env.float("OFFLOAD_RUN_AT_PAST_TOLERANCE", default=60.0)
# Retention in days per category of the cleanup kind (0 keeps for ever).
OFFLOAD_RETENTION_SUCCEEDED_DAYS = env.int("OFFLOAD_RETENTION_SUCCEEDED_DAYS", default=7)
OFFLOAD_RETENTION_FAILED_DAYS = env.int("OFFLOAD_RETENTION_FAILED_DAYS", default=30)
OFFLOAD_RETENTION_DEAD_DAYS = env.int("OFFLOAD_RETENTION_DEAD_DAYS", default=30)
OFFLOAD_RETENTION_CANCELLED_DAYS = env.int("OFFLOAD_RETENTION_CANCELLED_DAYS", default=30)
OFFLOAD_RETENTION_TASK_RESULTS_DAYS = env.int("OFFLOAD_RETENTION_TASK_RESULTS_DAYS", default=7)
OFFLOAD_RETENTION_SCHEDULE_SLOTS_DAYS = env.int("OFFLOAD_RETENTION_SCHEDULE_SLOTS_DAYS", default=30)
OFFLOAD_RETENTION_WEBHOOK_DELIVERIES_DAYS = env.int(
    "OFFLOAD_RETENTION_WEBHOOK_DELIVERIES_DAYS", default=30
)
# Rows the cleanup kind deletes per batch (one short transaction each).
OFFLOAD_CLEANUP_BATCH_SIZE = env.int("OFFLOAD_CLEANUP_BATCH_SIZE", default=2000)
# Seconds without a heartbeat after which a running job whose worker is gone is reaped.
OFFLOAD_REAPER_STALE_SECONDS = env.float("OFFLOAD_REAPER_STALE_SECONDS", default=90.0)
# How many times one job may be requeued by the reaper before it is left failed.
OFFLOAD_REAPER_MAX_REQUEUES = env.int("OFFLOAD_REAPER_MAX_REQUEUES", default=3)

# --- Email ------------------------------------------------------------------------

# EMAIL_URL (e.g. smtp+tls://user:password@smtp.example.org:587, consolemail://) wins over
# the single EMAIL_* settings when it is set.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=30.0)
if env("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Offload <offload@localhost>")
# Absolute address of this site, for links in emails (unsubscribe links).
OFFLOAD_PUBLIC_URL = env("OFFLOAD_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
# Most recipients one `email` job may have; larger audiences are an email_campaign.
OFFLOAD_EMAIL_MAX_RECIPIENTS = env.int("OFFLOAD_EMAIL_MAX_RECIPIENTS", default=50)
# Most attachments of one email, and their largest total size in bytes.
OFFLOAD_EMAIL_MAX_ATTACHMENTS = env.int("OFFLOAD_EMAIL_MAX_ATTACHMENTS", default=10)
OFFLOAD_EMAIL_MAX_ATTACHMENT_BYTES = env.int(
    "OFFLOAD_EMAIL_MAX_ATTACHMENT_BYTES", default=10 * 1024 * 1024
)
# Messages per second all workers together may send (0: no limit).
OFFLOAD_EMAIL_RATE_LIMIT = env.float("OFFLOAD_EMAIL_RATE_LIMIT", default=0.0)
# Attempts of an email job on transient SMTP failures (4xx, timeouts, refused connections)
# and the base of their exponential backoff in seconds (capped at OFFLOAD_EMAIL_RETRY_MAX).
OFFLOAD_EMAIL_MAX_ATTEMPTS = env.int("OFFLOAD_EMAIL_MAX_ATTEMPTS", default=5)
OFFLOAD_EMAIL_RETRY_BACKOFF = env.float("OFFLOAD_EMAIL_RETRY_BACKOFF", default=30.0)
OFFLOAD_EMAIL_RETRY_MAX = env.float("OFFLOAD_EMAIL_RETRY_MAX", default=1800.0)
# Recipients per child job of an email campaign.
OFFLOAD_EMAIL_CAMPAIGN_CHUNK = env.int("OFFLOAD_EMAIL_CAMPAIGN_CHUNK", default=100)
# How often a campaign job reads its children's progress, in seconds.
OFFLOAD_EMAIL_CAMPAIGN_POLL = env.float("OFFLOAD_EMAIL_CAMPAIGN_POLL", default=1.0)

# --- Logging ----------------------------------------------------------------------

# "json": one JSON object per line (production, CI); "console": readable lines (quickstart).
LOG_FORMAT = env("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "jobs.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "jobs.logs.JsonFormatter"},
        "console": {
            "()": "jobs.logs.ConsoleFormatter",
            "format": "%(asctime)s %(levelname)-7s %(name)s %(message)s",
        },
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["default"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": "INFO"},
        # Celery's own lines per task ("received", "succeeded in", "retry"); errors are
        # logged whatever this says. The notifications worker runs with WARNING (Procfile).
        "celery.worker.strategy": {"level": env("CELERY_TASK_LOG_LEVEL", default="INFO")},
        "celery.app.trace": {"level": env("CELERY_TASK_LOG_LEVEL", default="INFO")},
    },
}
