"""`WS /ws/jobs`: start jobs and follow them on one socket (Django Channels).

Client messages: `{"type": "start_job", "kind", "params", "priority"?, "request_id"?}`,
`{"type": "subscribe", "job_id"}`, `{"type": "unsubscribe", "job_id"}`. Server messages:
`{"type": "started", "job_id", "request_id"}`, `{"type": "snapshot", "event"}`,
`{"type": "event", "event"}` (the same event bodies as SSE) and
`{"type": "error", "code", "message", "fields", "request_id"}`. A bad message gets an error
and the socket stays open; an unauthenticated socket gets an error and is closed (4401).
"""

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import serializers
from rest_framework.authtoken.models import Token

from jobs import selectors, services
from jobs.api.serializers import JobSubmitSerializer
from jobs.errors import OffloadError
from jobs.fanout import OVERFLOW, RESYNC, Subscriber, hub

MAX_MESSAGE_BYTES = 256 * 1024


class TokenAuthMiddleware:
    """`Authorization: Token …` header or `?token=` sets the user; otherwise the session
    middleware inside decides."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        key = None
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.lower().startswith(b"token "):
                key = value[6:].decode("latin1").strip()
        if key is None:
            key = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [None])[0]
        if key is not None:
            scope = dict(scope, user=await _token_user(key))
        return await self.inner(scope, receive, send)


@database_sync_to_async
def _token_user(key: str) -> Any:
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class BrowserOriginValidator(OriginValidator):
    """A browser's socket must come from one of ALLOWED_HOSTS (it carries the session
    cookie); clients that send no Origin (scripts, services) authenticate by token."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def origin_validator(inner: Any) -> BrowserOriginValidator:
    return BrowserOriginValidator(inner, settings.ALLOWED_HOSTS)


class JobsConsumer(AsyncWebsocketConsumer):
    subscriber: Subscriber | None = None
    pump: asyncio.Task | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # Whatever ends the connection (a clean close, a client gone mid-send, an error),
        # the subscription goes with it.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()

    def _release(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            self.pump = None
        if self.subscriber is not None:
            self.subscriber.close()
            self.subscriber = None

    async def connect(self) -> None:
        await self.accept()
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self._error(
                "not_authenticated",
                "Authentication required: send 'Authorization: Token <token>', ?token=, or "
                "log in first.",
            )
            await self.close(code=4401)
            return
        self.versions: dict[str, int] = {}
        # Events of a job whose ownership check (snapshot read) is still running.
        self.pending: dict[str, list[dict]] = {}
        self.subscriber = hub.subscribe()
        self.pump = asyncio.create_task(self._pump(self.subscriber))

    async def disconnect(self, code: int) -> None:
        self._release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.subscriber is None:
            return
        try:
            raw = text_data if text_data is not None else (bytes_data or b"").decode()
            if len(raw) > MAX_MESSAGE_BYTES:
                raise OffloadError(f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.")
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self._error("invalid_json", "The message is not valid JSON.")
            return
        except OffloadError as exc:
            await self._error(exc.code, exc.message)
            return
        if not isinstance(message, dict):
            await self._error("invalid", "A message must be a JSON object with a 'type'.")
            return
        request_id = message.get("request_id")
        handler = {
            "start_job": self._start_job,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
        }.get(message.get("type"))
        if handler is None:
            await self._error(
                "unknown_type",
                f"Unknown message type {str(message.get('type'))[:40]!r}; use start_job, "
                "subscribe or unsubscribe.",
                request_id=request_id,
            )
            return
        try:
            await handler(message)
        except OffloadError as exc:
            await self._error(exc.code, exc.message, exc.fields, request_id=request_id)
        except serializers.ValidationError as exc:
            await self._error(
                "invalid", "The message is not valid; see the fields.", exc.detail,
                request_id=request_id,
            )  # fmt: skip

    async def _start_job(self, message: dict) -> None:
        body = {k: v for k, v in message.items() if k not in ("type", "request_id")}
        job = await database_sync_to_async(_submit)(body, self.user)
        await self.send_json(
            {"type": "started", "job_id": str(job.id), "request_id": message.get("request_id")}
        )
        await self._follow(str(job.id))

    async def _subscribe(self, message: dict) -> None:
        job_id = message.get("job_id")
        if not isinstance(job_id, str):
            raise OffloadError("subscribe needs a job_id.", fields={"job_id": ["required"]})
        await self._follow(job_id)

    async def _unsubscribe(self, message: dict) -> None:
        self.versions.pop(str(message.get("job_id")), None)

    async def _follow(self, job_id: str) -> None:
        self.subscriber.watch(job_id)
        self.pending.setdefault(job_id, [])
        try:
            await hub.source_ready()
            snapshot = await database_sync_to_async(selectors.job_event_snapshot)(
                user=self.user, job_id=job_id
            )
        finally:
            held = self.pending.pop(job_id, [])
        self.versions[snapshot["job_id"]] = snapshot["version"]
        await self.send_json({"type": "snapshot", "event": snapshot})
        for event in held:
            await self._forward(event)

    async def _pump(self, subscriber: Subscriber) -> None:
        while not subscriber.closed:
            event = await subscriber.get(settings.OFFLOAD_SSE_KEEPALIVE)
            if event is None:
                continue
            if event is OVERFLOW:
                await self._error("overflow", "Too many events behind; subscribe again.")
                await self.close(code=4408)
                return
            if event is RESYNC:
                for job_id in list(self.versions):
                    fresh = await database_sync_to_async(selectors.job_event_snapshot)(
                        user=self.user, job_id=job_id
                    )
                    await self._forward(fresh)
                continue
            await self._forward(event)

    async def _forward(self, event: dict) -> None:
        # Only jobs this socket subscribed to after an ownership check; never older news.
        if event["job_id"] in self.pending:
            self.pending[event["job_id"]].append(event)
            return
        known = self.versions.get(event["job_id"])
        if known is None or event["version"] <= known:
            return
        self.versions[event["job_id"]] = event["version"]
        await self.send_json({"type": "event", "event": event})

    async def send_json(self, content: dict) -> None:
        try:
            await self.send(text_data=json.dumps(content, separators=(",", ":")))
        except OSError:  # the client has gone; the disconnect releases everything
            self._release()

    async def _error(
        self, code: str, message: str, fields: Any = None, *, request_id: Any = None
    ) -> None:
        await self.send_json(
            {
                "type": "error",
                "code": code,
                "message": message,
                "fields": fields or {},
                "request_id": request_id,
            }
        )


def _submit(body: dict, user: Any) -> Any:
    serializer = JobSubmitSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    job, _ = services.job_submit(spec=serializer.to_spec(), owner=user)
    return job
