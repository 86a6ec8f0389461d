"""Outbound HTTP for webhooks, guarded against server-side request forgery.

Two checks:
- `url_check` (at submit and endpoint registration): http/https only, a host, no
  `localhost`, and no IP literal that is not globally routable, in any of its spellings
  (dotted, decimal `2130706433`, hex `0x7f000001`, short `127.1`, IPv6 and IPv4-mapped
  IPv6). Host names are not resolved here: what they resolve to can change by delivery.
- `target_resolve` (at each delivery): resolves the host and refuses it unless every
  address is globally routable; the request then connects to the address that was
  checked (the `Host` header and TLS SNI keep the name), so a DNS answer that changes
  between the check and the connection ("rebinding") cannot redirect it.

Redirects are never followed. `OFFLOAD_WEBHOOK_ALLOWED_HOSTS` lists host names, IPs or
networks (CIDR) that are let through anyway, for development and tests.
"""

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from jobs.errors import OffloadError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(OffloadError):
    code = "unsafe_url"


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    address: IPAddress


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host literal names, in any spelling a resolver would accept."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if host and all(part for part in host.split(".")) and host.replace(".", "").isalnum():
        try:
            # inet_aton accepts the legacy forms: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def address_is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(address.packed[-4:]) if address in NAT64 else None
        )
        if embedded is not None:
            return address_is_public(embedded)
    return address.is_global and not address.is_multicast


def _allowed(host: str, address: IPAddress | None = None) -> bool:
    for entry in settings.OFFLOAD_WEBHOOK_ALLOWED_HOSTS:
        if entry.lower() == host.lower():
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _refuse(url: str, reason: str) -> UnsafeURL:
    return UnsafeURL(
        f"{url[:200]!r} is refused: {reason}. Webhooks only go to public http(s) addresses.",
        fields={"url": [reason]},
    )


def url_parts(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; refuses anything else."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise _refuse(
            url,
            "it has spaces, control or non-ASCII characters (write an international host "
            "name in its xn-- form and percent-encode the rest)",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(url, f"it is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(url, f"the scheme {scheme or '(none)'!r} is not http or https")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse(url, "it has no host")
    if parts.username or parts.password:
        raise _refuse(url, "credentials in the URL are not allowed")
    return scheme, host, port or (443 if scheme == "https" else 80)


def url_check(url: str) -> str:
    """What can be known without resolving: raises UnsafeURL, returns the URL."""
    _, host, _ = url_parts(url)
    if _allowed(host):
        return url
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        raise _refuse(url, f"{host!r} is this machine")
    address = _ip_literal(host)
    if address is not None and not _allowed(host, address) and not address_is_public(address):
        raise _refuse(url, f"{host!r} is {address}, which is not a public address")
    return url


def target_resolve(url: str) -> Target:
    """Resolve the URL's host now and pick the checked address to connect to."""
    url_check(url)
    _, host, port = url_parts(url)
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _refuse(url, f"{host!r} does not resolve ({exc.strerror})") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise _refuse(url, f"{host!r} has no address")
    if not _allowed(host):
        bad = [a for a in addresses if not _allowed(host, a) and not address_is_public(a)]
        if bad:
            raise _refuse(url, f"{host!r} resolves to {bad[0]}, which is not a public address")
    return Target(url=url, host=host, port=port, address=addresses[0])


@dataclass(frozen=True)
class Response:
    status_code: int | None
    latency_ms: float
    body: str = ""
    error: str = ""


_transport: httpx.HTTPTransport | None = None


def _http_transport() -> httpx.HTTPTransport:
    """httpx's transport without the client layer: no redirects are ever followed, no
    proxy from the environment, no cookies; connections to a receiver are kept alive."""
    global _transport
    if _transport is None:
        _transport = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
    return _transport


def post(target: Target, *, body: bytes, headers: dict[str, str]) -> Response:
    """POST to the checked address (not to whatever the name resolves to by now)."""
    parts = urlsplit(target.url)
    address = target.address
    netloc = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    pinned = parts._replace(netloc=f"{netloc}:{target.port}").geturl()
    host_header = target.host if parts.port is None else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]" + (f":{parts.port}" if parts.port else "")
    request_headers = {
        **headers,
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "Offload-Webhooks/1",
    }
    started = time.monotonic()
    try:
        request = httpx.Request(
            "POST",
            pinned,
            content=body,
            headers=request_headers,
            extensions={
                "timeout": httpx.Timeout(settings.OFFLOAD_WEBHOOK_TIMEOUT).as_dict(),
                "sni_hostname": target.host,
            },
        )
        response = _http_transport().handle_request(request)
        try:
            # Only the start of the answer is kept; a receiver cannot make us read more.
            text = next(response.iter_bytes(), b"")[:500].decode("utf-8", "replace")
        finally:
            response.close()
    except httpx.TimeoutException:
        return Response(
            None,
            (time.monotonic() - started) * 1000,
            error=f"no answer within {settings.OFFLOAD_WEBHOOK_TIMEOUT:g} s",
        )
    except httpx.HTTPError as exc:
        return Response(None, (time.monotonic() - started) * 1000, error=f"{exc!r}"[:300])
    return Response(response.status_code, (time.monotonic() - started) * 1000, body=text)
