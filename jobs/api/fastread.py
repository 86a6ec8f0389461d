"""The status read's fast path: `GET` (or `HEAD`) `/api/v1/jobs/{id}` with
`Authorization: Token <key>`, answered in front of Django with one query on an async pool.

Why it exists: clients poll the status read, and its budget is 1,000 requests/s on 2 cores
(DESIGN.md). Through Django a read cost about 3.5 ms of CPU (the ASGI handler, nine
middleware, DRF's token lookup through the ORM, the synchronous view on a thread, a second
query for the job, the serializer): about 215 requests/s with 2 uvicorn processes
(bench/api.py). Here one round trip to PostgreSQL reads the token's user and the job
together, and the answer is built without a thread, a view or a serializer.

What it answers: a `GET` or `HEAD` of exactly the job-detail URL, with no query string, body
or cookie, one `Authorization: Token <key>` of an active user, an `Accept` that DRF answers
with plain `application/json` (none, `*/*`, `application/*`, `application/json`) and a Host
Django accepts: 200 with the job, 304 when `If-None-Match` holds its ETag, 404 when there is
no such job among the user's (staff: among all). Everything else goes to Django untouched:
other requests, an unknown token or an inactive user (Django's 401), an id that is not a
UUID (Django's 404), any error here, and every request for PAUSE_AFTER_DATABASE_ERROR
seconds after the database failed (Django then reports the outage as usual). With SQLite or
`OFFLOAD_FAST_READ=False` Django answers everything. Nothing is cached: the token, the user
and the job are read on every request, so a deleted token or a deactivated user stops at
once.

How parity is kept:
- the request is Django's own ASGIRequest, so header parsing, the Host check and the scheme
  are Django's; the body is `job_representation` (JobSerializer's) rendered by DRF's
  JSONRenderer; the headers are the view's `detail_headers` and DRF's `Allow`; the 404 is
  `job_not_found` in the API's `error_body`;
- each middleware of MIDDLEWARE acts on the answer as it would through Django, through its
  own code where it has an effect (SecurityMiddleware's HTTPS redirect and headers,
  CommonMiddleware's Host and user-agent checks and Content-Length, XFrameOptionsMiddleware,
  RequestIdMiddleware's X-Request-ID and request log line, which says `fast_read`); the
  others have none on such a request (no cookie: no session, CSRF or messages state);
- `_unsupported()` checks once per process every setting this relies on (the middleware
  list, the view's authentication, permissions, renderer, throttles, versioning, the URL,
  the database) and leaves the fast path off, with a warning, when one differs;
- tests/api/test_fast_read.py asks both paths the same requests (every job state, owner,
  staff, other user, inactive user, bad token, missing and malformed ids, header variants)
  and compares status, headers and body bytes.
"""

import io
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import DisallowedHost, PermissionDenied
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.db import connections
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import get_script_prefix, resolve, reverse
from django.utils.log import log_response
from psycopg import AsyncConnection, OperationalError
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer

from jobs.api import views
from jobs.api.errors import error_body
from jobs.api.serializers import LINKS, REPRESENTED_FIELDS, job_representation
from jobs.logs import (
    REQUEST_ID_HEADER,
    log_context_reset,
    log_context_set,
    request_id_from,
    request_log,
)
from jobs.models import Job
from jobs.selectors import job_not_found

logger = logging.getLogger(__name__)

# The middleware whose effect on this answer is reproduced here; any other list turns the
# fast path off.
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
    "config.middleware.SyncChainMiddleware",  # passes the request and answer on unchanged
]
# Accept values DRF answers with the JSON renderer's plain media type.
ACCEPTED = frozenset({"*/*", "application/*", "application/json"})
# Seconds a request waits for a pooled connection before Django answers it instead.
POOL_TIMEOUT = 2.0
# Seconds Django answers every read after the fast path's database failed.
PAUSE_AFTER_DATABASE_ERROR = 5.0
_ID = "00000000-0000-0000-0000-000000000000"  # stands for the job id in the link templates
OFF, NOT_POSTGRESQL = "OFFLOAD_FAST_READ is off", "the database is not PostgreSQL"


def _path(url_name: str) -> str:
    """The URL path of a job's view (the job id stands as _ID), without a script prefix:
    the fast path answers no request that has one."""
    path = reverse(url_name, kwargs={"job_id": _ID})
    return "/" + path.removeprefix(get_script_prefix())


def _unsupported() -> str | None:
    """Why the fast path cannot answer as Django would here, or None if it can."""
    view = views.JobDetailView
    database = connections["default"]
    json_fields = [Job._meta.get_field(name) for name in ("params", "result", "error")]
    reasons = {
        OFF: not settings.OFFLOAD_FAST_READ,
        NOT_POSTGRESQL: database.vendor != "postgresql",
        "the database role is switched": bool(database.settings_dict["OPTIONS"].get("assume_role")),
        "MIDDLEWARE is not the list it reproduces": list(settings.MIDDLEWARE) != MIDDLEWARE,
        "the view does not authenticate by token first": (
            list(view.authentication_classes)[:1] != [TokenAuthentication]
            or TokenAuthentication.model is not None
        ),
        "the view has other permissions": list(view.permission_classes) != [IsAuthenticated],
        "the view has other renderers": list(view.renderer_classes) != [JSONRenderer],
        "the view is throttled": bool(view.throttle_classes),
        "the view is versioned": view.versioning_class is not None,
        "the view negotiates otherwise": view.content_negotiation_class
        is not DefaultContentNegotiation,
        "job-detail is not the status read": (
            resolve(_path("job-detail")).func is not views.job_detail
        ),
        "a script prefix is set": bool(settings.FORCE_SCRIPT_NAME),
        "CSRF tokens live in sessions": settings.CSRF_USE_SESSIONS,
        "USE_TZ is off": not settings.USE_TZ,
        "a job JSON field has its own decoder": any(field.decoder for field in json_fields),
    }
    return next((reason for reason, applies in reasons.items() if applies), None)


def _lookup_sql() -> str:
    """The token's active user and, if that user may see it, the job: no row for an unknown
    token or an inactive user, a row of NULLs for a job that is missing or not theirs."""
    user, token, job = get_user_model()._meta, Token._meta, Job._meta

    def column(meta: Any, name: str) -> str:
        return meta.get_field(name).column

    columns = ", ".join(f"j.{column(job, name)} AS {name}" for name in REPRESENTED_FIELDS)
    return (
        f"SELECT {columns} FROM {token.db_table} t "  # noqa: S608 (names from the models)
        f"JOIN {user.db_table} u ON u.{user.pk.column} = t.{column(token, 'user')} "
        f"LEFT JOIN {job.db_table} j ON j.{job.pk.column} = %(job)s "
        f"AND (u.{column(user, 'is_staff')} OR j.{column(job, 'owner')} = u.{user.pk.column}) "
        f"WHERE t.{token.pk.column} = %(key)s AND u.{column(user, 'is_active')}"
    )


async def _utc(conn: AsyncConnection) -> None:
    # As Django does with USE_TZ: timestamps come back in UTC.
    if conn.info.parameter_status("TimeZone") != "UTC":
        await conn.execute("SET TIME ZONE 'UTC'")


class FastRead:
    """ASGI app for HTTP: answers the hot status read, hands everything else to Django."""

    def __init__(self, app: ASGIHandler) -> None:
        self.app = app
        self.served = 0  # answers given here rather than by Django (tests read it)
        self._on: bool | None = None  # None until the first request checks the settings
        self._pool: AsyncConnectionPool | None = None
        self._paused_until = 0.0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            response = await self._answer(scope) if self._mine(scope) else None
        except Exception:
            # The fast path must never change an answer: Django gives it instead.
            logger.exception("the status read's fast path failed; Django answers")
            response = None
        if response is None:
            await self.app(scope, receive, send)
        else:
            self.served += 1
            await self.app.send_response(response, send)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _mine(self, scope: dict) -> bool:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope.get("query_string")
        ):
            return False
        if self._on is None:
            self._setup()
        return (
            self._on
            and scope["path"].startswith(self._prefix)
            and time.monotonic() >= self._paused_until
        )

    def _setup(self) -> None:
        self._on = False  # until every check below has passed
        reason = _unsupported()
        if reason is not None:
            # Off by choice or on SQLite (the quickstart) is expected; anything else means a
            # setting changed under it, and status reads are ten times dearer: say so.
            expected = reason in (OFF, NOT_POSTGRESQL)
            logger.log(
                logging.INFO if expected else logging.WARNING,
                "status read fast path off: %s",
                reason,
            )
            return
        self._prefix = _path("job-detail").removesuffix(_ID)
        self._links = {name: _path(url_name) for name, url_name in LINKS.items()}
        self._sql = _lookup_sql()
        self._keyword = TokenAuthentication.keyword.lower().encode()
        self._key_length = Token._meta.get_field("key").max_length
        self._renderer = JSONRenderer()
        view = views.JobDetailView()
        view.setup(None)  # as as_view() does: HEAD answers like GET
        self._view_headers = view.default_response_headers

        def unused(request: Any) -> None:  # the middleware below are only asked for hooks
            raise AssertionError("not called")

        self._security = SecurityMiddleware(unused)
        self._common = CommonMiddleware(unused)
        # In the order Django applies them to a response (MIDDLEWARE reversed).
        self._response_hooks = [
            XFrameOptionsMiddleware(unused).process_response,
            self._common.process_response,
            self._security.process_response,
        ]
        self._on = True

    async def _answer(self, scope: dict) -> HttpResponse | None:
        started = time.perf_counter()
        request = ASGIRequest(scope, io.BytesIO())
        wanted = self._wanted(request)
        if wanted is None:
            return None
        key, job_id = wanted
        try:
            row = await self._lookup(key, job_id)
        except OperationalError as exc:  # connection refused or lost, pool timeout
            self._paused_until = time.monotonic() + PAUSE_AFTER_DATABASE_ERROR
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            logger.warning(
                "the status read's fast path pauses for %ss, Django answers: %s",
                PAUSE_AFTER_DATABASE_ERROR,
                first_line,
            )
            return None
        if row is None:
            return None  # an unknown token or an inactive user: Django's 401
        # What RequestIdMiddleware, the outermost middleware, does around the rest.
        request_id = request_id_from(request)
        context = log_context_set(request_id=request_id)
        try:
            response = self._response(request, row, job_id)
            for hook in self._response_hooks:
                response = hook(request, response)
            request_log(request, response, started, fast_read=True)
        finally:
            log_context_reset(context)
        response[REQUEST_ID_HEADER] = request_id
        if response.status_code >= 400:  # as Django's handler logs it
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response

    def _wanted(self, request: ASGIRequest) -> tuple[str, uuid.UUID] | None:
        """The token key and job id of a request this path answers, else None."""
        meta = request.META
        if (
            request.script_name
            or "HTTP_COOKIE" in meta
            or meta.get("CONTENT_LENGTH", "0") not in ("", "0")
            or "HTTP_TRANSFER_ENCODING" in meta
        ):
            return None
        accept = meta.get("HTTP_ACCEPT")
        if accept is not None and not {part.strip() for part in accept.split(",")} <= ACCEPTED:
            return None
        try:
            if self._security.process_request(request) or self._common.process_request(request):
                return None  # a redirect
        except (DisallowedHost, PermissionDenied):
            return None
        auth = get_authorization_header(request).split()
        if len(auth) != 2 or auth[0].lower() != self._keyword:
            return None
        try:
            key = auth[1].decode()
            job_id = uuid.UUID(request.path_info.removeprefix(self._prefix))
        except ValueError:  # UnicodeDecodeError included
            return None
        if len(key) > self._key_length or "\x00" in key:
            return None  # no such token can exist; Django says so
        return key, job_id

    async def _lookup(self, key: str, job_id: uuid.UUID) -> Any:
        if self._pool is None:
            params = connections["default"].get_connection_params()
            for django_only in ("cursor_factory", "context"):
                params.pop(django_only)
            self._pool = AsyncConnectionPool(
                kwargs={**params, "autocommit": True, "row_factory": namedtuple_row},
                min_size=1,
                max_size=settings.OFFLOAD_FAST_READ_POOL_SIZE,
                timeout=POOL_TIMEOUT,
                configure=_utc,
                name="offload-fast-read",
                open=False,
            )
        if self._pool.closed:
            await self._pool.open()  # safe when another request opened it meanwhile
        async with self._pool.connection() as conn:
            cursor = await conn.execute(self._sql, {"key": key, "job": job_id})
            return await cursor.fetchone()

    def _response(self, request: ASGIRequest, row: Any, job_id: uuid.UUID) -> HttpResponse:
        """What the DRF view answers, before the middleware."""
        if row.id is None:
            error = job_not_found(job_id)
            body = error_body(error.code, error.message, error.fields)
            response = self._json(body, status=error.status)
        else:
            headers = views.detail_headers(row)
            if views.not_modified(headers, request.headers.get("If-None-Match")):
                response = HttpResponse(status=304)
                del response["Content-Type"]  # DRF drops it from an empty answer
            else:
                job = str(row.id)
                links = {
                    name: request.build_absolute_uri(path.replace(_ID, job))
                    for name, path in self._links.items()
                }
                response = self._json(job_representation(row, links=links), status=200)
            for name, value in headers.items():
                response[name] = value
        for name, value in self._view_headers.items():
            response[name] = value
        return response

    def _json(self, data: dict, *, status: int) -> HttpResponse:
        content = self._renderer.render(data, self._renderer.media_type)
        return HttpResponse(content, status=status, content_type=self._renderer.media_type)
