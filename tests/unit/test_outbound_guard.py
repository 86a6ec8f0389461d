"""The outbound guard and the signatures, without a network."""

import base64
import json
import socket

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from notifications import outbound, signing

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hook",
    "http://10.255.1.2:8080/hook",
    "http://100.64.0.1/hook",
    "http://192.168.1.1/hook",
    "http://172.16.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0x7f.0.0.1/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://167772161/hook",
    "file:///etc/passwd",
    "ftp://example.com/file",
    "gopher://example.com/",
    "javascript:alert(1)",
    "http://user:pw@example.com/hook",
    "http:///hook",
    "http://[::1/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_urls_are_refused_before_any_lookup(url):
    with pytest.raises(outbound.UnsafeURL) as refused:
        outbound.url_check(url)
    assert "refused" in refused.value.message


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "http://93.184.216.34:8080/x", "https://[2606:4700::1]/"]
)
def test_public_urls_pass(url):
    assert outbound.url_check(url) == url


def test_the_allowlist_opens_a_chosen_private_host(settings):
    settings.OFFLOAD_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.2", "10.9.0.0/16"]
    assert outbound.url_check("http://127.0.0.2:9000/hook")
    assert outbound.target_resolve("http://10.9.3.4/hook").address.exploded == "10.9.3.4"
    with pytest.raises(outbound.UnsafeURL):
        outbound.url_check("http://127.0.0.1/hook")


def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery():
    name = socket.gethostname()  # resolves to a loopback or private address here
    address = socket.getaddrinfo(name, 80)[0][4][0]
    assert outbound.url_check(f"http://{name}/hook")  # cannot be known at submit
    with pytest.raises(outbound.UnsafeURL) as refused:
        outbound.target_resolve(f"http://{name}/hook")
    assert address in refused.value.message


def test_signatures_verify_with_the_standard_webhooks_package():
    old, new = signing.secret_generate(), signing.secret_generate()
    assert new.startswith("whsec_")
    assert len(base64.b64decode(new.removeprefix("whsec_"))) == 32
    body = json.dumps({"type": "job.succeeded", "data": {"x": 1}}).encode()
    import time

    headers = signing.headers([new, old], message_id="msg_1", timestamp=int(time.time()), body=body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers) == {"type": "job.succeeded", "data": {"x": 1}}
    assert Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.secret_generate()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace(b"1", b"2"), headers)
