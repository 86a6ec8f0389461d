"""Report downloads: `GET /api/v1/reports/download/<token>` (the signed link in a report
job's result) and `POST /api/v1/reports/files/<id>/link` (a fresh link). Both need a
logged-in caller who owns the file, or staff; refusals are in reports/links.py."""

import uuid

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api.serializers import ErrorSerializer
from jobs.errors import NotFound
from reports import links

ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Bad signature, or not your report"),
    404: OpenApiResponse(ErrorSerializer, description="No such report file"),
    410: OpenApiResponse(ErrorSerializer, description="Link expired, or file deleted"),
}


class LinkSerializer(serializers.Serializer):
    url = serializers.CharField()
    expires_at = serializers.DateTimeField()


class ReportDownloadView(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> object:
        # The body is the file itself; errors are JSON whatever the Accept header asks.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="reports_download",
        responses={200: OpenApiResponse(description="The report file"), **ERRORS},
    )
    def get(self, request: Request, token: str) -> FileResponse:
        """Download a report through the signed link in its job's result."""
        stored = links.link_resolve(token=token, user=request.user)
        try:
            content = default_storage.open(stored.storage_name, "rb")
        except FileNotFoundError:
            raise links.LinkGone(
                f"Report file {stored.id} is no longer in storage. Run the report again.",
                code="file_deleted",
            ) from None
        response = FileResponse(
            content,
            content_type=stored.content_type,
            as_attachment=True,
            filename=stored.original_name or None,
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response


class ReportLinkView(APIView):
    @extend_schema(
        operation_id="reports_link", request=None, responses={200: LinkSerializer, **ERRORS}
    )
    def post(self, request: Request, file_id: str) -> Response:
        """A fresh signed download link for one of your reports (staff: any report)."""
        try:
            file_uuid = uuid.UUID(file_id)
        except ValueError:
            raise NotFound(f"{file_id[:80]!r} is not a report file id: ids are UUIDs.") from None
        stored = links.report_file_for(user=request.user, file_id=file_uuid)
        if stored is None:
            raise NotFound(f"No report file {file_uuid}.")
        url, expires = links.link_make(file_id=stored.id)
        return Response(
            {
                "url": request.build_absolute_uri(url),
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
            }
        )
