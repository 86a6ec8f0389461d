"""The unsubscribe view through Django's test client: signed links work without a login,
a tampered or forged one changes nothing."""

import pytest
from django.core import signing
from django.test import Client

from notifications.models import Contact
from notifications.unsubscribe import unsubscribe_token, unsubscribe_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def contacts():
    return [Contact.objects.create(email=f"c{i}@example.org") for i in range(2)]


def _path(token: str) -> str:
    return f"/unsubscribe/{token}"


def test_link_unsubscribes_without_login_after_a_confirming_post(contacts):
    contact = contacts[0]
    client = Client(enforce_csrf_checks=True)
    assert unsubscribe_url(contact.id).endswith(_path(unsubscribe_token(contact.id)))

    page = client.get(_path(unsubscribe_token(contact.id)))
    assert page.status_code == 200
    assert b'method="post"' in page.content
    contact.refresh_from_db()
    assert contact.unsubscribed_at is None

    done = client.post(_path(unsubscribe_token(contact.id)), {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    contact.refresh_from_db()
    first = contact.unsubscribed_at
    assert first is not None
    assert client.post(_path(unsubscribe_token(contact.id))).status_code == 200
    contact.refresh_from_db()
    assert contact.unsubscribed_at == first  # a second click keeps the first time
    contacts[1].refresh_from_db()
    assert contacts[1].unsubscribed_at is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("xx" if token[-2:] != "xx" else "yy"),
        lambda token: token.split(":")[0],
        lambda token: signing.b64_encode(b'{"c":2}').decode() + ":" + token.split(":")[1],
        lambda token: signing.Signer(key="not-the-key", salt="offload.unsubscribe").sign_object(
            {"c": 1}
        ),
        lambda token: signing.Signer(salt="another.use").sign_object({"c": 1}),
        lambda token: "%00",
    ],
)
def test_tampered_or_forged_links_are_refused(contacts, tamper):
    token = tamper(unsubscribe_token(contacts[0].id))
    response = Client().post(_path(token))
    assert response.status_code == 400
    assert b"not valid" in response.content
    assert not Contact.objects.filter(unsubscribed_at__isnull=False).exists()


def test_link_of_a_deleted_contact(contacts):
    token = unsubscribe_token(contacts[0].id)
    contacts[0].delete()
    assert Client().post(_path(token)).status_code == 404


def test_other_methods_are_refused(contacts):
    response = Client().put(_path(unsubscribe_token(contacts[0].id)))
    assert response.status_code == 405
