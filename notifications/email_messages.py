"""Building email messages: recipients, rendered parts, attachments and headers."""

import email.utils
import os
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email

from jobs.models import StoredFile
from notifications.email_sending import message_id
from notifications.email_templates import Rendered

FORBIDDEN = ("\r", "\n", "\x00")


class RecipientError(ValueError):
    """A recipient that is not one address (with an optional display name)."""


def recipient_parse(value: Any) -> tuple[str, str]:
    """`a@x.org` or `Name <a@x.org>` -> (address, formatted header value). A line break
    anywhere (header injection), several addresses or a malformed one are refused."""
    if not isinstance(value, str) or not value.strip():
        raise RecipientError("a recipient is a non-empty string")
    if len(value) > 320:
        raise RecipientError("longer than 320 characters")
    if any(char in value for char in FORBIDDEN):
        raise RecipientError("contains a line break (CR/LF) or NUL: refused (header injection)")
    parsed = email.utils.getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise RecipientError(f"{value[:80]!r} is not one email address")
    name, address = parsed[0]
    try:
        validate_email(address)
    except ValidationError:
        raise RecipientError(f"{address[:80]!r} is not a valid email address") from None
    return address.lower(), email.utils.formataddr((name, address)) if name else address


def attachments_load(file_ids: Sequence[str]) -> list[tuple[str, bytes, str]]:
    """(file name, content, content type) of each stored file, in order. Raises
    FileNotFoundError naming a file that is gone."""
    files = {str(f.id): f for f in StoredFile.objects.filter(id__in=list(file_ids))}
    loaded = []
    for file_id in file_ids:
        stored = files.get(str(file_id))
        if stored is None:
            raise FileNotFoundError(f"attachment {file_id} no longer exists")
        with default_storage.open(stored.storage_name, "rb") as handle:
            content = handle.read()
        name = stored.original_name or os.path.basename(stored.storage_name)
        loaded.append((name, content, stored.content_type))
    return loaded


def email_build(
    *,
    job_id: Any,
    address: str,
    to: str,
    rendered: Rendered,
    attachments: Sequence[tuple[str, bytes, str]] = (),
    headers: dict[str, str] | None = None,
) -> EmailMultiAlternatives:
    """One message to one recipient (recipients never see each other)."""
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"Message-ID": message_id(job_id=job_id, recipient=address), **(headers or {})},
    )
    if rendered.html is not None:
        message.attach_alternative(rendered.html, "text/html")
    for name, content, content_type in attachments:
        message.attach(name, content, content_type)
    return message
