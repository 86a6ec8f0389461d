"""Signed unsubscribe links: `/unsubscribe/<token>`, working without a login.

The token is the contact id signed with the site's secret key (Django's `Signer`, salted
for this use): a changed or forged token is refused with a 400 and changes nothing. The
link does not expire, so an old newsletter still unsubscribes. Opening the link shows a
page with one button (mail scanners that prefetch links unsubscribe nobody); the button,
and mail clients' one-click `List-Unsubscribe-Post` (RFC 8058), POST to the same address.
"""

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notifications.models import Contact

SALT = "offload.unsubscribe"


def unsubscribe_token(contact_id: int) -> str:
    return signing.Signer(salt=SALT).sign_object({"c": contact_id})


def unsubscribe_url(contact_id: int) -> str:
    path = reverse("unsubscribe", kwargs={"token": unsubscribe_token(contact_id)})
    return f"{settings.OFFLOAD_PUBLIC_URL}{path}"


def contact_from_token(token: str) -> int | None:
    try:
        value = signing.Signer(salt=SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    contact_id = value.get("c") if isinstance(value, dict) else None
    return contact_id if isinstance(contact_id, int) else None


def contact_unsubscribe(*, contact_id: int) -> bool:
    """Mark the contact unsubscribed (the first time only); False if it no longer exists."""
    if not Contact.objects.filter(id=contact_id).exists():
        return False
    Contact.objects.filter(id=contact_id, unsubscribed_at__isnull=True).update(
        unsubscribed_at=timezone.now()
    )
    return True


@csrf_exempt  # the signed token is the credential; mail clients POST without a session
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    contact_id = contact_from_token(token)
    if contact_id is None:
        return render(request, "notifications/unsubscribe.html", {"state": "invalid"}, status=400)
    if request.method == "GET":
        return render(request, "notifications/unsubscribe.html", {"state": "confirm"})
    if not contact_unsubscribe(contact_id=contact_id):
        return render(request, "notifications/unsubscribe.html", {"state": "gone"}, status=404)
    return render(request, "notifications/unsubscribe.html", {"state": "done"})
