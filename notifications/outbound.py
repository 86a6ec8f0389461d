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

import contextlib
import http.client
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
from django.conf import settings

from jobs.errors import OffloadError
from jobs.timers import Timers

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


BODY_KEPT = 500  # bytes of the answer read and recorded; a receiver cannot make us read more
IDLE_KEPT = 32  # idle keep-alive connections a worker process holds, over all receivers


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address, with SNI and the certificate check on the URL's host."""

    def __init__(self, address: str, port: int, *, hostname: str, **kwargs: Any) -> None:
        super().__init__(address, port, **kwargs)
        self._hostname = hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._hostname)


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


# Idle connections per (scheme, address, port, host), least recently used receiver first.
# A thread-pool worker sends to one receiver from several threads at once, so a receiver
# can have several; each is handed to one sender at a time.
_idle: OrderedDict[tuple, list[http.client.HTTPConnection]] = OrderedDict()
_idle_lock = threading.Lock()


def _idle_take(key: tuple) -> http.client.HTTPConnection | None:
    with _idle_lock:
        kept = _idle.get(key)
        if not kept:
            return None
        conn = kept.pop()
        if not kept:
            del _idle[key]
        return conn


def _connection(key: tuple, timeout: float) -> http.client.HTTPConnection:
    while (conn := _idle_take(key)) is not None:
        # A connection the receiver has closed (or written to unasked) reads as ready.
        if conn.sock is not None and not select.select([conn.sock], [], [], 0)[0]:
            conn.sock.settimeout(timeout)
            return conn
        conn.close()
    scheme, address, port, host = key
    if scheme == "https":
        return _PinnedHTTPSConnection(
            address, port, hostname=host, timeout=timeout, context=_tls_context()
        )
    return http.client.HTTPConnection(address, port, timeout=timeout)


def _keep(key: tuple, conn: http.client.HTTPConnection) -> None:
    evicted = []
    with _idle_lock:
        _idle.setdefault(key, []).append(conn)
        _idle.move_to_end(key)
        excess = sum(len(kept) for kept in _idle.values()) - IDLE_KEPT
        while excess > 0:
            oldest, kept = next(iter(_idle.items()))
            evicted.append(kept.pop(0))
            if not kept:
                del _idle[oldest]
            excess -= 1
    for stale in evicted:
        stale.close()


# Ends attempts that outlive their deadline. The per-operation socket timeout alone would
# let a receiver that drips a byte at a time hold a sender for as long as it likes, and
# Celery's time limits, which would stop it, do not apply in a thread pool. Almost every
# deadline is cancelled long before it is due: the slack lets the thread drop them in
# batches, a wake-up every half second rather than one per attempt.
_deadlines = Timers("offload-webhook-deadlines", slack=0.5)


class _Attempt:
    """What the deadline timer needs of one attempt: its connection, whether the attempt is
    over (set by its sender), and whether the deadline cut it off."""

    __slots__ = ("conn", "cut", "over")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.over = False
        self.cut = False


def _attempt_end(attempt: _Attempt) -> None:
    """Shut down the socket of an overdue attempt: the sender's blocked read returns at once
    with an end of stream. (Should the attempt end meanwhile and keep its connection, the
    shut-down socket reads as closed when next taken, and a new one is made.)"""
    if attempt.over:
        return
    sock = attempt.conn.sock
    if sock is None:  # still connecting, which the socket timeout bounds: look again soon
        _deadlines.call_later(0.05, lambda: _attempt_end(attempt))
        return
    attempt.cut = True
    # The plain socket's shutdown, also under TLS: the sender's thread owns the TLS state.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def post(target: Target, *, body: bytes, headers: dict[str, str]) -> Response:
    """POST to the checked address (not to whatever the name resolves to by now).

    Plain `http.client`: it follows no redirects, reads no proxy from the environment and
    keeps no cookies, and it costs half the CPU of an httpx transport per request (this is
    the hot path of the webhook queue). Every socket operation (connect, TLS, send, each
    read) has OFFLOAD_WEBHOOK_TIMEOUT, and so has the whole attempt (see _Deadlines); only
    the first BODY_KEPT bytes of the answer are read, and a connection is kept alive only
    when its answer was read to the end.
    """
    parts = urlsplit(target.url)
    host_header = target.host if parts.port is None else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]" + (f":{parts.port}" if parts.port else "")
    request_headers = {
        **headers,
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "Offload-Webhooks/1",
    }
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = (parts.scheme, str(target.address), target.port, target.host)
    timeout = settings.OFFLOAD_WEBHOOK_TIMEOUT
    started = time.monotonic()
    conn = _connection(key, timeout)
    attempt = _Attempt(conn)
    deadline = _deadlines.call_later(timeout, lambda: _attempt_end(attempt))
    try:
        try:
            conn.request("POST", path, body=body, headers=request_headers)
            response = conn.getresponse()
            text = response.read(BODY_KEPT).decode("utf-8", "replace")
        finally:
            attempt.over = True
            deadline.cancel()
    except TimeoutError:
        conn.close()
        return _no_answer(started, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # ValueError: a URL path or header http.client refuses to send (control characters)
        conn.close()
        if attempt.cut:
            return _no_answer(started, timeout)
        return Response(None, (time.monotonic() - started) * 1000, error=f"{exc!r}"[:300])
    if attempt.cut:
        conn.close()
        return _no_answer(started, timeout)
    latency_ms = (time.monotonic() - started) * 1000
    if response.isclosed() and not response.will_close:
        _keep(key, conn)
    else:
        conn.close()
    return Response(response.status, latency_ms, body=text)


def _no_answer(started: float, timeout: float) -> Response:
    return Response(
        None, (time.monotonic() - started) * 1000, error=f"no answer within {timeout:g} s"
    )
