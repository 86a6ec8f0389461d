"""Expiring signed download links of report files.

A link is `/api/v1/reports/download/<token>`; the token is the file id and an expiry time,
signed with Django's signing (HMAC-SHA256 under DJANGO_SECRET_KEY, with its own salt). The
expiry is inside the signed token, fixed when the link is made: changing
OFFLOAD_REPORT_LINK_TTL_SECONDS later changes new links only. A link is not a bearer
credential: the download still needs a logged-in caller who owns the file, or staff. The
owner gets a fresh link from `POST /api/v1/reports/files/<id>/link`.

Refusals, in this order: a token whose signature does not match (edited, truncated, made
with another key) is a 403; a caller who is neither the owner nor staff is a 403; an
expired link is a 410 Gone; a file deleted since (retention) is a 410 too.
"""

import time
import uuid
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.urls import reverse

from jobs.errors import OffloadError, PermissionDenied
from jobs.models import FilePurpose, StoredFile

SALT = "offload.reports.download"


class LinkGone(OffloadError):
    status = 410
    code = "gone"


def link_make(*, file_id: uuid.UUID, ttl: int | None = None) -> tuple[str, datetime]:
    """A signed download path for the file and the moment it expires."""
    ttl = settings.OFFLOAD_REPORT_LINK_TTL_SECONDS if ttl is None else ttl
    expires = int(time.time()) + ttl
    token = signing.dumps({"f": str(file_id), "e": expires}, salt=SALT)
    path = reverse("report-download", kwargs={"token": token})
    return path, datetime.fromtimestamp(expires, tz=UTC)


def _token_read(token: str) -> tuple[uuid.UUID, int]:
    try:
        payload = signing.loads(token, salt=SALT)
        return uuid.UUID(payload["f"]), int(payload["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise PermissionDenied(
            "This download link is not valid: its signature does not match. Use the link "
            "from the job's result exactly as it is, or ask for a fresh one.",
            code="bad_signature",
        ) from None


def report_file_for(*, user: AbstractBaseUser, file_id: uuid.UUID) -> StoredFile | None:
    """The report file if the user may download it (its owner, or staff); None if it is
    gone. Raises a 403 for anyone else."""
    stored = StoredFile.objects.filter(id=file_id, purpose=FilePurpose.REPORT).first()
    if stored is None:
        return None
    if not (user.is_staff or (stored.owner_id is not None and stored.owner_id == user.pk)):
        raise PermissionDenied(
            "This report belongs to another user; only its owner or staff may download it.",
            code="not_owner",
        )
    return stored


def link_resolve(*, token: str, user: AbstractBaseUser) -> StoredFile:
    """The file a link names, for this user, or the refusal (see the module docstring)."""
    file_id, expires = _token_read(token)
    stored = report_file_for(user=user, file_id=file_id)
    if expires < time.time():
        at = datetime.fromtimestamp(expires, tz=UTC).isoformat().replace("+00:00", "Z")
        raise LinkGone(
            f"This download link expired at {at}. Ask for a fresh one: "
            f"POST /api/v1/reports/files/{file_id}/link.",
            code="link_expired",
        )
    if stored is None:
        raise LinkGone(
            f"Report file {file_id} no longer exists (reports are kept "
            f"OFFLOAD_RETENTION_FILES_DAYS days). Run the report again.",
            code="file_deleted",
        )
    return stored
