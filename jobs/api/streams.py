"""Server-Sent Events: `GET /api/v1/jobs/{id}/events` and `GET /api/v1/events`.

A stream subscribes to the process's fan-out (jobs/fanout.py) first, then reads its
snapshot from the database, then forwards every newer event. `id:` is the job version
(`<job id>/<version>` on the all-jobs stream); a client that reconnects with
`Last-Event-ID` gets no snapshot when it already has the current version. A comment line
is sent every `OFFLOAD_SSE_KEEPALIVE` seconds of silence; a single-job stream ends after a
terminal status. Nothing here polls the database: only a lost broker connection (or an
overflowing client) makes a stream re-read its snapshot once.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.request import Request
from rest_framework.views import APIView

from jobs import selectors
from jobs.api.errors import error_body
from jobs.api.serializers import ErrorSerializer
from jobs.errors import OffloadError
from jobs.fanout import OVERFLOW, RESYNC, Subscriber, hub
from jobs.models import TERMINAL_STATUSES


def _db(function: Any) -> Any:
    """Run a short database read off the event loop in the small shared thread pool, not
    in the request's own thread: Django keeps a thread's connection until its request
    finishes, and a stream's request lasts as long as the stream. So a thousand open
    streams hold a handful of database connections, not a thousand."""

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False)


def request_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The caller, by DRF token or session (the same rules as the rest of the API)."""
    drf_request = Request(request, authenticators=[TokenAuthentication(), SessionAuthentication()])
    user = drf_request.user
    return user if user is not None and user.is_authenticated else None


def _error(exc: Exception) -> JsonResponse:
    if isinstance(exc, OffloadError):
        return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, exceptions.AuthenticationFailed):
        return JsonResponse(
            error_body("authentication_failed", f"The token was not accepted: {exc.detail}"),
            status=401,
        )
    raise exc


def _unauthenticated() -> JsonResponse:
    return JsonResponse(
        error_body(
            "not_authenticated",
            "Authentication required: send 'Authorization: Token <your token>' or log in.",
        ),
        status=401,
    )


def sse_frame(event: dict[str, Any], *, name: str, event_id: str) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


def _stream_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def _last_version(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or ""
    try:
        return int(raw.rsplit("/", 1)[-1])
    except ValueError:
        return 0


async def job_events(request: HttpRequest, job_id: str) -> HttpResponse:
    try:
        user = await _db(request_user)(request)
    except exceptions.AuthenticationFailed as exc:
        return _error(exc)
    if user is None:
        return _unauthenticated()
    try:
        job_key = str(uuid.UUID(job_id))
    except ValueError:
        job_key = job_id  # the snapshot read answers the 404
    subscriber = hub.subscribe(job_ids=[job_key])
    try:
        await hub.source_ready()
        snapshot = await _db(selectors.job_event_snapshot)(user=user, job_id=job_id)
    except OffloadError as exc:
        subscriber.close()
        return _error(exc)
    except BaseException:
        subscriber.close()
        raise
    last_version = _last_version(request)
    if snapshot["status"] in TERMINAL_STATUSES and last_version >= snapshot["version"]:
        # The client has the final event: 204 tells EventSource to stop reconnecting.
        subscriber.close()
        return HttpResponse(status=204)
    return _stream_response(_job_stream(subscriber, user, snapshot, last_version=last_version))


async def _job_stream(
    subscriber: Subscriber, user: AbstractBaseUser, snapshot: dict, *, last_version: int
) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 2000\n\n"
        version = last_version
        if snapshot["version"] > version:
            version = snapshot["version"]
            yield sse_frame(snapshot, name="snapshot", event_id=str(version))
        if snapshot["status"] in TERMINAL_STATUSES:
            return
        while True:
            event = await subscriber.get(settings.OFFLOAD_SSE_KEEPALIVE)
            if event is None:
                yield b": keep-alive\n\n"
                continue
            if event is OVERFLOW:
                return
            if event is RESYNC:
                event = await _db(selectors.job_event_snapshot)(
                    user=user, job_id=snapshot["job_id"]
                )
            if event["version"] <= version:
                continue
            version = event["version"]
            yield sse_frame(event, name="job", event_id=str(version))
            if event["status"] in TERMINAL_STATUSES:
                return
    finally:
        subscriber.close()


async def all_events(request: HttpRequest) -> HttpResponse:
    """Every change of every job the caller can see (staff: all jobs); never ends by itself."""
    try:
        user = await _db(request_user)(request)
    except exceptions.AuthenticationFailed as exc:
        return _error(exc)
    if user is None:
        return _unauthenticated()
    if user.is_staff:
        subscriber = hub.subscribe(everything=True)
    else:
        subscriber = hub.subscribe(owner_id=user.pk)
    try:
        await hub.source_ready()
        snapshots = await _db(selectors.jobs_event_snapshots)(user=user)
    except BaseException:
        subscriber.close()
        raise
    return _stream_response(_all_stream(subscriber, user, snapshots))


async def _all_stream(
    subscriber: Subscriber, user: AbstractBaseUser, snapshots: list[dict]
) -> AsyncIterator[bytes]:
    versions: dict[str, int] = {}
    try:
        yield b"retry: 2000\n\n"
        for snapshot in reversed(snapshots):
            versions[snapshot["job_id"]] = snapshot["version"]
            yield sse_frame(
                snapshot, name="snapshot", event_id=f"{snapshot['job_id']}/{snapshot['version']}"
            )
        while True:
            event = await subscriber.get(settings.OFFLOAD_SSE_KEEPALIVE)
            if event is None:
                yield b": keep-alive\n\n"
                continue
            if event is OVERFLOW:
                return
            if event is RESYNC:
                fresh = await _db(selectors.jobs_event_snapshots)(user=user)
                for snapshot in reversed(fresh):
                    if snapshot["version"] > versions.get(snapshot["job_id"], 0):
                        versions[snapshot["job_id"]] = snapshot["version"]
                        yield sse_frame(
                            snapshot,
                            name="job",
                            event_id=f"{snapshot['job_id']}/{snapshot['version']}",
                        )
                continue
            if event["version"] <= versions.get(event["job_id"], 0):
                continue
            if event["status"] in TERMINAL_STATUSES:
                versions.pop(event["job_id"], None)
            else:
                versions[event["job_id"]] = event["version"]
            yield sse_frame(event, name="job", event_id=f"{event['job_id']}/{event['version']}")
    finally:
        subscriber.close()


async def events_stats(request: HttpRequest) -> HttpResponse:
    """Staff: this process's fan-out (subscribers, watched jobs, source)."""
    user = await _db(request_user)(request)
    if user is None or not user.is_staff:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return JsonResponse(hub.stats())


# --- OpenAPI: these async views are described by schema-only API views -----------------


class _JobEventsSchema(APIView):
    @extend_schema(
        operation_id="jobs_events",
        summary="Server-Sent Events of one job",
        description="A `snapshot` event, then a `job` event per change (`id:` is the job "
        "version; send `Last-Event-ID` to resume); ends after a final status; 204 when "
        "`Last-Event-ID` already names the final version.",
        parameters=[OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER)],
        responses={
            (200, "text/event-stream"): OpenApiTypes.STR,
            204: OpenApiResponse(description="The client has the final event"),
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def get(self, request: Any, job_id: str) -> None:  # pragma: no cover - schema only
        raise NotImplementedError


class _AllEventsSchema(APIView):
    @extend_schema(
        operation_id="events_stream",
        summary="Server-Sent Events of all the caller's jobs",
        description="Snapshots of the caller's unfinished jobs, then every change of any of "
        "their jobs (staff: all jobs); `id:` is `<job id>/<version>`; never ends.",
        responses={(200, "text/event-stream"): OpenApiTypes.STR, 401: ErrorSerializer},
    )
    def get(self, request: Any) -> None:  # pragma: no cover - schema only
        raise NotImplementedError


for _view, _schema in ((job_events, _JobEventsSchema), (all_events, _AllEventsSchema)):
    # drf-spectacular finds views through these attributes (as for jobs.api.views.job_detail).
    _view.cls = _schema  # type: ignore[attr-defined]
    _view.initkwargs = {}  # type: ignore[attr-defined]
    _view.view_class = _schema  # type: ignore[attr-defined]
