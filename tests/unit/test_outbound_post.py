"""The webhook sender against real loopback servers: keep-alive reuse and its limits, a
bounded read of the answer, broken answers, and TLS to a pinned address with SNI and the
certificate checked for the URL's host name."""

import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from notifications import outbound

ADDRESS = "127.0.0.2"
HOSTNAME = "hooks.example.test"


class Server:
    """An HTTP/1.1 (keep-alive) server on a loopback address. It counts the connections it
    accepted; `answer` is the body of every answer, `close_after` makes it close each
    connection after that many answers without saying so, and `hold` makes every answer
    wait until that barrier's parties have all sent a request."""

    def __init__(
        self,
        *,
        answer: bytes = b"",
        close_after: int = 0,
        tls=None,
        hold: threading.Barrier | None = None,
    ) -> None:
        self.connections = 0
        self.requests: list[dict] = []
        self.server_names: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                server.connections += 1
                self.answered = 0
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append(
                    {"path": self.path, "host": self.headers["Host"], "body": body}
                )
                if hold is not None:
                    hold.wait(timeout=10)
                self.send_response(200 if answer else 204)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.answered += 1
                if close_after and self.answered >= close_after:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((ADDRESS, 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def target(self, *, scheme: str = "http", host: str = ADDRESS, path: str = "/hook"):
        return outbound.Target(
            url=f"{scheme}://{host}:{self.port}{path}",
            host=host,
            port=self.port,
            address=ipaddress.ip_address(ADDRESS),
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_idle_connections() -> Iterator[None]:
    yield
    with outbound._idle_lock:
        idle = [conn for kept in outbound._idle.values() for conn in kept]
        outbound._idle.clear()
    for conn in idle:
        conn.close()


def _post(target: outbound.Target, body: bytes = b'{"n":1}') -> outbound.Response:
    return outbound.post(target, body=body, headers={"webhook-id": "msg_1"})


def _target(port: int) -> outbound.Target:
    return outbound.Target(
        url=f"http://{ADDRESS}:{port}/", host=ADDRESS, port=port,
        address=ipaddress.ip_address(ADDRESS),
    )  # fmt: skip


@contextmanager
def _one_connection(serve: Callable[[socket.socket], None]) -> Iterator[outbound.Target]:
    """A bare TCP listener that hands its first connection to `serve`, on a thread."""
    listener = socket.create_server((ADDRESS, 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            serve(conn)
        except OSError:
            pass  # the sender hung up
        finally:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield _target(listener.getsockname()[1])
    finally:
        thread.join(10)
        listener.close()


def test_deliveries_to_one_receiver_reuse_one_connection():
    server = Server()
    try:
        answers = [_post(server.target(path=f"/hook?n={n}")) for n in range(3)]
    finally:
        server.close()
    assert [a.status_code for a in answers] == [204, 204, 204]
    assert server.connections == 1
    assert [r["path"] for r in server.requests] == ["/hook?n=0", "/hook?n=1", "/hook?n=2"]
    assert server.requests[0]["host"] == f"{ADDRESS}:{server.port}"


def test_a_connection_the_receiver_closed_is_not_reused():
    server = Server(close_after=1)
    try:
        first = _post(server.target())
        # the receiver closes after its answer: wait for the close to reach the idle socket
        with outbound._idle_lock:
            ((idle,),) = outbound._idle.values()
        idle.sock.settimeout(5)
        assert idle.sock.recv(1, socket.MSG_PEEK) == b""
        second = _post(server.target())
    finally:
        server.close()
    assert (first.status_code, second.status_code) == (204, 204)
    assert server.connections == 2


def test_only_the_start_of_a_long_answer_is_read_and_its_connection_is_dropped():
    server = Server(answer=b"x" * 100_000)
    try:
        answers = [_post(server.target()) for _ in range(2)]
    finally:
        server.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert [len(a.body) for a in answers] == [outbound.BODY_KEPT] * 2
    assert server.connections == 2


def test_an_answer_that_is_not_http_is_an_error_not_an_exception():
    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"SMTP ready\r\n\r\n")

    with _one_connection(garbage) as target:
        answer = _post(target)
    assert answer.status_code is None
    assert "BadStatusLine" in answer.error
    assert not outbound._idle


def test_a_refused_connection_is_an_error():
    listener = socket.create_server((ADDRESS, 0))
    port = listener.getsockname()[1]
    listener.close()
    answer = _post(_target(port))
    assert answer.status_code is None
    assert "ConnectionRefused" in answer.error


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A test CA and a server certificate for HOSTNAME that it signed."""
    d = tmp_path_factory.mktemp("tls")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=Offload test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={HOSTNAME}", cwd=d,
    )  # fmt: skip
    (d / "server.ext").write_text(
        f"subjectAltName=DNS:{HOSTNAME}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d,
    )  # fmt: skip
    return d


@pytest.fixture
def tls_server(certificates: Path, monkeypatch) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    # The sender trusts the test CA (and only it) instead of the public CA bundle.
    monkeypatch.setattr(
        outbound, "_tls", ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    )
    server = Server(tls=context)
    yield server
    server.close()


def test_concurrent_senders_each_keep_their_connection():
    # No answer goes out before all four requests are in, so the four senders hold four
    # connections at once in every round: none can take one another sender just gave back.
    server = Server(hold=threading.Barrier(4))
    answers: list[outbound.Response] = []

    def sender() -> None:
        for _ in range(3):
            answers.append(_post(server.target()))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        server.close()
    assert [a.status_code for a in answers] == [204] * 12
    # one connection per concurrent sender, each reused: none closed and made again
    assert server.connections == 4
    with outbound._idle_lock:
        assert [len(kept) for kept in outbound._idle.values()] == [4]


def test_idle_connections_are_capped_oldest_receiver_first(monkeypatch):
    monkeypatch.setattr(outbound, "IDLE_KEPT", 2)
    servers = [Server() for _ in range(3)]
    try:
        for server in servers:
            assert _post(server.target()).status_code == 204
        with outbound._idle_lock:
            kept = {key[2] for key in outbound._idle}
        assert kept == {servers[1].port, servers[2].port}
        assert _post(servers[0].target()).status_code == 204
    finally:
        for server in servers:
            server.close()
    assert [server.connections for server in servers] == [2, 1, 1]


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(settings):
    settings.OFFLOAD_WEBHOOK_TIMEOUT = 1
    sent: list[int] = []
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        # A status line and then a header a byte at a time, each well within the socket
        # timeout: only the deadline of the whole attempt can end it.
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while len(sent) < 150 and not stop.wait(0.1):  # a complete answer after 15 s
            conn.sendall(b"x")
            sent.append(1)
        conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")

    with _one_connection(drip) as target:
        try:
            answer = _post(target)
            dripped = len(sent)
        finally:
            stop.set()
    assert answer.status_code is None
    assert answer.error == "no answer within 1 s"
    # the drip was still going when the sender gave up: it was cut off, not answered
    assert dripped >= 5
    assert not outbound._idle


def test_https_connects_to_the_checked_address_and_verifies_the_url_host(tls_server):
    answers = [_post(tls_server.target(scheme="https", host=HOSTNAME)) for _ in range(2)]
    assert [a.status_code for a in answers] == [204, 204]
    assert tls_server.server_names == [HOSTNAME]  # SNI carries the name; one handshake
    assert tls_server.connections == 1
    assert tls_server.requests[0]["host"] == f"{HOSTNAME}:{tls_server.port}"


def test_https_refuses_a_certificate_for_another_name(tls_server):
    answer = _post(tls_server.target(scheme="https", host="other.example.test"))
    assert answer.status_code is None
    assert "CERTIFICATE_VERIFY_FAILED" in answer.error or "match" in answer.error
    assert tls_server.requests == []
