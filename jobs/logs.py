"""Structured logs: one JSON object per line, each carrying what it happened inside of.

A context variable holds the current request id (web) or job id, kind and attempt (worker);
`ContextFilter`, attached to every handler, copies it onto each record, so a line logged by
any library during a request or a job names that request or job. `RequestIdMiddleware` takes
the caller's `X-Request-ID` (or makes one), returns it, logs one line per request, and the
submit services store it on the jobs that request creates.
"""

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "offload_log_context", default=None
)
CONTEXT_FIELDS = ("request_id", "job_id", "kind", "attempt")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

request_logger = logging.getLogger("offload.request")


def log_context_set(**values: Any) -> contextvars.Token:
    return _context.set({**(_context.get() or {}), **values})


def log_context_reset(token: contextvars.Token) -> None:
    _context.reset(token)


def log_context_clear() -> None:
    _context.set(None)


def request_id_current() -> str:
    return (_context.get() or {}).get("request_id", "")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", …context, …extra, "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """Readable lines for the quickstart, with the job or request they belong to."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        ]
        return f"{line} [{' '.join(tags)}]" if tags else line


def request_id_from(request: HttpRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def request_log(request: HttpRequest, response: HttpResponse, started: float, **extra: Any) -> None:
    request_logger.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            **extra,
        },
    )


class RequestIdMiddleware:
    """Works for sync and async views alike (the status long-poll is async)."""

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        request_id = request_id_from(request)
        token = log_context_set(request_id=request_id)
        try:
            response = self.get_response(request)
            request_log(request, response, started)
        finally:
            log_context_reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request_id = request_id_from(request)
        token = log_context_set(request_id=request_id)
        try:
            response = await self.get_response(request)
            request_log(request, response, started)
        finally:
            log_context_reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
