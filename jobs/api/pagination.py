"""Cursor pagination whose `page_size` is checked, not silently clamped: a page size outside
1..max is a 400 naming the range, as the schema says."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from jobs.errors import OffloadError


class CheckedCursorPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        given = request.query_params.get(self.page_size_query_param)
        if given is None:
            return self.page_size
        if not given.isdigit() or not 1 <= int(given) <= self.max_page_size:
            raise OffloadError(
                f"page_size must be a whole number from 1 to {self.max_page_size}, "
                f"not {given[:50]!r}.",
                code="invalid",
                fields={"page_size": [f"1 to {self.max_page_size}"]},
            )
        return int(given)

    @classmethod
    def parameters(cls) -> list[OpenApiParameter]:
        return [
            OpenApiParameter(
                "page_size", {"type": "integer", "minimum": 1, "maximum": cls.max_page_size}
            ),
            OpenApiParameter("cursor", str, description="From the `next` or `previous` link"),
        ]
