"""The one application error type. The API's exception handler turns it into
`{"error": {"code", "message", "fields"}}` with its HTTP status."""

from typing import Any


class OffloadError(Exception):
    status = 400
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.fields = fields or {}


class NotFound(OffloadError):
    status = 404
    code = "not_found"


class Conflict(OffloadError):
    status = 409
    code = "conflict"


class PermissionDenied(OffloadError):
    status = 403
    code = "permission_denied"


class BrokerUnavailable(OffloadError):
    status = 503
    code = "broker_unavailable"


class JobCancelled(Exception):
    """Raised inside a running task when its job was cancelled; the task stops there."""
