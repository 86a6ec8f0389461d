"""The jobs API: thin views that validate, call one service or selector, and serialize."""

import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors, services
from jobs.api import schema
from jobs.api.pagination import CheckedCursorPagination
from jobs.api.serializers import (
    ErrorSerializer,
    JobBulkResultSerializer,
    JobBulkSubmitSerializer,
    JobPageSerializer,
    JobRequeueResultSerializer,
    JobRequeueSerializer,
    JobSerializer,
    JobSubmitSerializer,
)
from jobs.errors import OffloadError, PermissionDenied
from jobs.fanout import OVERFLOW, RESYNC, hub
from jobs.models import TERMINAL_STATUSES, Job, JobStatus

IDEMPOTENCY_HEADER = "Idempotency-Key"
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    404: OpenApiResponse(ErrorSerializer, description="No such job among yours"),
}


def _etag(job: Any) -> str:
    return f'"{job.id.hex}-{job.version}"'


def detail_headers(job: Any) -> dict[str, str]:
    """The headers of a status read (also answered by jobs/api/fastread.py)."""
    headers = {"ETag": _etag(job), "Cache-Control": "private, no-cache"}
    if job.status not in TERMINAL_STATUSES:
        headers["Retry-After"] = "1"
    return headers


def not_modified(headers: dict[str, str], if_none_match: str | None) -> bool:
    return headers["ETag"] in (if_none_match or "")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not key.strip() or len(key) > 255:
        raise OffloadError(
            f"The {IDEMPOTENCY_HEADER} header must be 1 to 255 characters, not {len(key)}.",
            code="invalid_idempotency_key",
            fields={IDEMPOTENCY_HEADER: ["1 to 255 characters"]},
        )
    return key


class JobPagination(CheckedCursorPagination):
    pass


class JobListView(APIView):
    @extend_schema(
        operation_id="jobs_list",
        parameters=[
            OpenApiParameter(
                "status",
                {"type": "array", "items": {"type": "string", "enum": JobStatus.values}},
                style="form",
                explode=False,
                description="Comma-separated statuses",
            ),
            OpenApiParameter("kind", str),
            *JobPagination.parameters(),
        ],
        responses={200: JobPageSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        jobs = selectors.jobs_list(
            user=request.user,
            status=request.query_params.get("status"),
            kind=request.query_params.get("kind"),
        )
        paginator = JobPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        data = JobSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        operation_id="jobs_submit",
        request=schema.job_submit_schema(),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
                OpenApiParameter.HEADER,
                description="Same key and body: the same job; same key, other body: 409",
            )
        ],
        responses={
            202: JobSerializer,
            403: OpenApiResponse(ErrorSerializer, description="A staff-only kind"),
            409: OpenApiResponse(ErrorSerializer, description="Idempotency key reused"),
            503: OpenApiResponse(ErrorSerializer, description="Broker unreachable"),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        serializer = JobSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job, created = services.job_submit(
            spec=serializer.to_spec(), owner=request.user, idempotency_key=key
        )
        body = JobSerializer(job, context={"request": request}).data
        response = Response(body, status=202, headers={"Location": body["links"]["self"]})
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response


class JobBulkView(APIView):
    @extend_schema(
        operation_id="jobs_bulk_submit",
        request=schema.job_bulk_submit_schema(),
        responses={202: JobBulkResultSerializer, 503: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        if IDEMPOTENCY_HEADER in request.headers:
            raise OffloadError(
                f"{IDEMPOTENCY_HEADER} is not supported on bulk submits; submit one by one "
                "to make each job idempotent.",
                code="invalid_idempotency_key",
            )
        serializer = JobBulkSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        jobs = services.jobs_bulk_submit(specs=serializer.to_specs(), owner=request.user)
        data = JobSerializer(jobs, many=True, context={"request": request}).data
        return Response({"jobs": data}, status=202)


class JobRequeueView(APIView):
    @extend_schema(
        operation_id="jobs_requeue",
        request=JobRequeueSerializer,
        responses={202: JobRequeueResultSerializer, 403: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Staff: requeue failed or dead jobs by ids, or all of a kind."""
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may requeue jobs in bulk.")
        serializer = JobRequeueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        jobs = selectors.jobs_requeueable(
            user=request.user, status=data["status"], ids=data.get("ids"), kind=data.get("kind")
        )
        requeued = services.jobs_requeue(jobs=list(jobs[: services.REQUEUE_MAX + 1]))
        return Response(
            {"requeued": len(requeued), "ids": [str(job.id) for job in requeued]}, status=202
        )


class JobDetailView(APIView):
    @extend_schema(
        operation_id="jobs_get",
        parameters=[
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": settings.OFFLOAD_LONG_POLL_MAX},
                description="Long-poll: wait up to this many seconds for a change",
            ),
            OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER),
        ],
        responses={200: JobSerializer, 304: OpenApiResponse(description="Not modified"), **ERRORS},
    )
    def get(self, request: Request, job_id: str) -> Response:
        _wait_seconds(request.query_params.get("wait"))
        job = selectors.job_get(user=request.user, job_id=job_id)
        headers = detail_headers(job)
        if not_modified(headers, request.headers.get("If-None-Match")):
            return Response(status=304, headers=headers)
        return Response(JobSerializer(job, context={"request": request}).data, headers=headers)


class _JobActionView(APIView):
    service = staticmethod(services.job_cancel)

    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get(user=request.user, job_id=job_id)
        job = self.service(job=job)
        return Response(JobSerializer(job, context={"request": request}).data, status=202)


class JobCancelView(_JobActionView):
    service = staticmethod(services.job_cancel)

    @extend_schema(
        operation_id="jobs_cancel",
        request=None,
        responses={202: JobSerializer, 409: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request, job_id: str) -> Response:
        return super().post(request, job_id)


class JobRetryView(_JobActionView):
    service = staticmethod(services.job_retry)

    @extend_schema(
        operation_id="jobs_retry",
        request=None,
        responses={202: JobSerializer, 409: ErrorSerializer, 503: ErrorSerializer, **ERRORS},
    )
    def post(self, request: Request, job_id: str) -> Response:
        return super().post(request, job_id)


_detail_view = JobDetailView.as_view()
_detail_sync = sync_to_async(_detail_view)


def _wait_seconds(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= settings.OFFLOAD_LONG_POLL_MAX:
        raise OffloadError(
            f"wait must be a number of seconds from 0 to {settings.OFFLOAD_LONG_POLL_MAX}, "
            f"not {raw[:20]!r}.",
            fields={"wait": [f"0 to {settings.OFFLOAD_LONG_POLL_MAX}"]},
        )
    return wait


async def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """`GET /api/v1/jobs/{id}`; with `?wait=N` it long-polls without holding a thread or
    polling the database: the first read authenticates, checks ownership and validates;
    then the wait listens to the process's event fan-out (jobs/fanout.py) for the job."""
    response = await _detail_sync(request, job_id=job_id)
    if response.status_code not in (200, 304) or "Retry-After" not in response:
        return response
    if response.status_code == 200 and "If-None-Match" in request.headers:
        return response  # changed since the version the caller has
    wait = _wait_seconds(request.GET.get("wait"))
    if not wait:
        return response
    version = int(response["ETag"].strip('"').rsplit("-", 1)[1])
    if await _changed_within(job_id, version=version, seconds=wait):
        return await _detail_sync(request, job_id=job_id)
    return response


async def _changed_within(job_id: str, *, version: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    subscriber = hub.subscribe(job_ids=[str(uuid.UUID(job_id))])
    try:
        await hub.source_ready(timeout=min(seconds, 5.0))
        # Subscribed now: one read covers a change made since the first read.
        current = await sync_to_async(_version_of, thread_sensitive=False)(job_id)
        if current != version:
            return True
        while (left := deadline - time.monotonic()) > 0:
            event = await subscriber.get(left)
            if event is None:
                return False
            if event is RESYNC or event is OVERFLOW or event.get("version") != version:
                return True
        return False
    finally:
        subscriber.close()


def _version_of(job_id: str) -> int | None:
    close_old_connections()
    try:
        return Job.objects.filter(id=job_id).values_list("version", flat=True).first()
    finally:
        close_old_connections()


# drf-spectacular finds views through these attributes.
job_detail.cls = JobDetailView  # type: ignore[attr-defined]
job_detail.initkwargs = {}  # type: ignore[attr-defined]
job_detail.view_class = JobDetailView  # type: ignore[attr-defined]
