"""Uploads and files: `POST /api/v1/uploads` (multipart), the upload's record, and the
download of any file the caller owns (uploads and job outputs)."""

from typing import Any

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import uploads
from jobs.api.serializers import ErrorSerializer
from jobs.errors import OffloadError
from jobs.models import StoredFile

MULTIPART_OVERHEAD = 64 * 1024


class UploadSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    url = serializers.CharField()

    def to_representation(self, stored: StoredFile) -> dict[str, Any]:
        return {
            "id": str(stored.id),
            "name": stored.original_name,
            "content_type": stored.content_type,
            "size": stored.size,
            "sha256": stored.sha256,
            "width": stored.width,
            "height": stored.height,
            "created_at": stored.created_at.isoformat().replace("+00:00", "Z"),
            "url": self.context["request"].build_absolute_uri(uploads.file_url(stored)),
        }


class UploadRequestSerializer(serializers.Serializer):
    file = serializers.FileField()


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Empty or unreadable file"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    413: OpenApiResponse(ErrorSerializer, description="Over the size limit of its type"),
    415: OpenApiResponse(ErrorSerializer, description="Content is not an accepted type"),
}
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such file among yours")


class UploadCreateView(APIView):
    parser_classes = [MultiPartParser]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Before anything reads the body (the CSRF check of session auth may): stream the
        # file to disk through the sniffing, hashing, size-limited handler.
        request.upload_handlers = [uploads.UploadStreamHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        operation_id="uploads_create",
        request={"multipart/form-data": UploadRequestSerializer},
        responses={201: UploadSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Upload a JPEG, PNG or WebP image or a UTF-8 CSV file as the multipart field
        `file`; name the returned id in a job's params."""
        length = request.META.get("CONTENT_LENGTH", "")
        limit = uploads.upload_limit(None) + MULTIPART_OVERHEAD
        if length.isdigit() and int(length) > limit:
            raise uploads.UploadTooLarge(
                f"The request body is {length} bytes; no upload may be larger than "
                f"{uploads.upload_limit(None)} bytes.",
                fields={"file": ["too large"]},
            )
        files = request.FILES.getlist("file")
        if len(files) != 1:
            raise OffloadError(
                "Send exactly one file, as the multipart form field 'file'.",
                code="invalid",
                fields={"file": ["required: one file"]},
            )
        unknown = sorted(name for name in request.data if name != "file")
        if unknown:
            raise OffloadError(
                "Send only the multipart form field 'file'; unknown fields: "
                f"{', '.join(name[:50] for name in unknown[:10])}.",
                code="invalid",
                fields={name[:50]: ["unknown field"] for name in unknown[:10]},
            )
        stored = uploads.upload_create(owner=request.user, file=files[0])
        body = UploadSerializer(stored, context={"request": request}).data
        return Response(body, status=201, headers={"Location": body["url"]})


class UploadDetailView(APIView):
    @extend_schema(
        operation_id="uploads_get", responses={200: UploadSerializer, 404: NOT_FOUND, **ERRORS}
    )
    def get(self, request: Request, upload_id: str) -> Response:
        stored = uploads.upload_get(user=request.user, upload_id=upload_id)
        return Response(UploadSerializer(stored, context={"request": request}).data)


class FileContentView(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is the file itself; errors are JSON whatever the Accept header asks.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="files_content",
        responses={200: OpenApiResponse(description="The file's bytes"), 404: NOT_FOUND, **ERRORS},
    )
    def get(self, request: Request, file_id: str) -> FileResponse:
        """Download a file you own: an upload or a file one of your jobs made."""
        stored = uploads.file_get(user=request.user, file_id=file_id)
        response = FileResponse(
            default_storage.open(stored.storage_name, "rb"),
            content_type=stored.content_type,
            as_attachment=stored.content_type == "text/csv",
            filename=stored.original_name or None,
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, max-age=0"
        return response
