"""Clients of the ways out, for tests and benchmarks: an SSE reader, a WebSocket reader,
a reply-queue consumer on `offload.events`, and a Standard Webhooks receiver."""

import asyncio
import contextlib
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import kombu


class SseReader:
    """Reads one SSE stream in a thread; `frames` holds every parsed frame in order."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.frames: list[dict[str, Any]] = []
        self.comments = 0
        self.status: int | None = None
        self.body = b""
        self.ended = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SseReader":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = response.read()
                    return
                frame: dict[str, Any] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments += 1
                    elif line == "":
                        if "data" in frame:
                            frame["data"] = json.loads(frame["data"])
                            self.frames.append(frame)
                        frame = {}
                    else:
                        name, _, value = line.partition(":")
                        frame[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def events(self) -> list[dict[str, Any]]:
        return [frame["data"] for frame in self.frames]

    def stop(self) -> None:
        self._stop.set()


class ReplyQueue:
    """Another service's durable queue bound to `offload.events` (the reply-queue pattern)."""

    def __init__(self, broker_url: str, *, binding: str = "job.#") -> None:
        self.connection = kombu.Connection(broker_url)
        exchange = kombu.Exchange("offload.events", type="topic", durable=True)
        self.queue = kombu.Queue(
            f"test.replies.{uuid.uuid4().hex[:8]}", exchange, routing_key=binding, durable=True
        )
        self.queue(self.connection.channel()).declare()
        self.events: list[dict[str, Any]] = []
        self.routing_keys: list[str] = []

    def drain(self) -> list[dict[str, Any]]:
        with self.connection.SimpleQueue(self.queue) as simple:
            while True:
                try:
                    message = simple.get(timeout=0.2)
                except simple.Empty:
                    break
                self.events.append(message.payload)
                self.routing_keys.append(message.delivery_info["routing_key"])
                message.ack()
        return self.events

    def close(self) -> None:
        self.queue(self.connection.channel()).delete()
        self.connection.release()


class WebhookReceiver:
    """A loopback HTTP server that verifies each request with the `standardwebhooks`
    package. `behaviour(n)` picks the answer of the n-th request: a status code, or
    "hang" (answers after `hang_seconds`, or when `release` is set)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.2",
        secrets: list[str] | None = None,
        behaviour: Any = None,
        hang_seconds: float = 5.0,
    ) -> None:
        self.secrets = secrets or []
        self.behaviour = behaviour or (lambda n: 200)
        self.hang_seconds = hang_seconds
        self.release = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from standardwebhooks import Webhook

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = {}
                for secret in receiver.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                        verified[secret] = True
                    except Exception:
                        verified[secret] = False
                with receiver.lock:
                    n = len(receiver.requests) + 1
                    receiver.requests.append(
                        {"headers": headers, "body": body, "verified": verified, "path": self.path}
                    )
                answer = receiver.behaviour(n)
                if answer == "hang":
                    receiver.release.wait(receiver.hang_seconds)
                    answer = 200
                if isinstance(answer, tuple):
                    answer, location = answer
                    self.send_response(answer)
                    self.send_header("Location", location)
                else:
                    self.send_response(answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Canary:
    """Listens on loopback (IPv4 and IPv6) and counts every connection it sees."""

    def __init__(self) -> None:
        self.connections = 0
        self.sockets = []
        self.port = None
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.port or 0))
            self.port = sock.getsockname()[1]
            sock.listen(16)
            sock.settimeout(0.2)
            self.sockets.append(sock)
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for sock in self.sockets:
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                self.connections += 1
                conn.close()

    def close(self) -> None:
        self._stop.set()
        for sock in self.sockets:
            sock.close()


async def ws_collect(
    url: str, messages: list[dict], *, headers: dict | None = None, until: Any, timeout: float = 30
) -> list[dict]:
    """Open a socket, send `messages`, collect what comes back until `until(received)`."""
    import websockets

    received: list[dict] = []
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        for message in messages:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
        async with asyncio.timeout(timeout):
            while not until(received):
                received.append(json.loads(await ws.recv()))
    return received
