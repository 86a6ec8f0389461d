"""One error shape for the whole API: `{"error": {"code", "message", "fields"}}`."""

import logging
import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jobs.errors import OffloadError

logger = logging.getLogger(__name__)

_MESSAGES = {
    exceptions.ParseError: "The request body is not valid JSON",
    exceptions.NotAuthenticated: (
        "Authentication required: send 'Authorization: Token <your token>' or log in."
    ),
    exceptions.AuthenticationFailed: "The token or credentials were not accepted",
}


# Seconds a client is told to wait when the database does not answer.
DATABASE_RETRY_AFTER = 5
DATABASE_MESSAGE = (
    "The database is unavailable right now (it refused the connection or is overloaded); "
    "nothing was changed. Try again in a few seconds."
)


def _database_log(exc: BaseException) -> None:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    logger.error("database unavailable: %s", first_line)


def database_unavailable(exc: BaseException) -> JsonResponse:
    """The database refused or lost the connection (server down, too many clients, pool
    exhausted): a 503 the client may retry, not a 500 that looks like a bug."""
    _database_log(exc)
    response = JsonResponse(error_body("database_unavailable", DATABASE_MESSAGE), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def _database_error(exc: BaseException | None) -> bool:
    # Only errors of the connection itself: a failed query on a live connection (a bad
    # SQL, a constraint) is still a bug and a 500.
    return isinstance(exc, OperationalError | InterfaceError)


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _validation_message(detail: Any) -> str:
    if isinstance(detail, dict):
        names = ", ".join(str(name) for name in list(detail)[:10])
        return f"The request is not valid; see the fields: {names}."
    if isinstance(detail, list) and detail:
        return f"The request is not valid: {detail[0]}"
    return "The request is not valid."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, OffloadError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(
                "too_large",
                "The request body is larger than the limit of "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            ),
            status=413,
        )
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Not found."), status=404)
    if _database_error(exc):
        _database_log(exc)
        return Response(
            error_body("database_unavailable", DATABASE_MESSAGE),
            status=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", _validation_message(exc.detail), fields)
        return response
    if isinstance(exc, exceptions.APIException):
        message = _MESSAGES.get(type(exc))
        detail = str(exc.detail)
        if message is None:
            message = detail
        elif detail and detail not in message:
            message = f"{message}: {detail}"
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        response.data = error_body(code, message)
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception)
    return JsonResponse(
        error_body(
            "not_found", f"Nothing at {request.path[:200]!r}. The API lives under /api/v1/."
        ),
        status=404,
    )


def json_server_error(request: HttpRequest) -> JsonResponse:
    # Django calls this handler while it handles the exception, so the exception is at hand:
    # a database outage seen outside a DRF view (middleware, admin, streams) is a 503 too.
    exc = sys.exc_info()[1]
    if _database_error(exc):
        return database_unavailable(exc)
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; it has been logged."),
        status=500,
    )
