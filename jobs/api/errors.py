"""One error shape for the whole API: `{"error": {"code", "message", "fields"}}`."""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
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
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; it has been logged."),
        status=500,
    )
