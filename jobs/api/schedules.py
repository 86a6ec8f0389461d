"""`/api/v1/schedules`: staff read, create and delete schedules (thin over
jobs/schedules/services.py; the admin offers the same with its forms)."""

import json
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api.serializers import ErrorSerializer, StrictSerializer
from jobs.errors import NotFound, PermissionDenied
from jobs.models import OverlapPolicy, ScheduleSlot
from jobs.registry import StrictBooleanField, kind_for_task
from jobs.schedules import selectors, services

# django-celery-beat stores both in integer columns; larger values were a database error.
INT_MAX = 2**31 - 1


class CrontabSerializer(StrictSerializer):
    minute = serializers.CharField(max_length=240, default="*")
    hour = serializers.CharField(max_length=96, default="*")
    day_of_week = serializers.CharField(max_length=64, default="*")
    day_of_month = serializers.CharField(max_length=124, default="*")
    month_of_year = serializers.CharField(max_length=64, default="*")
    timezone = serializers.CharField(max_length=63, default="UTC")


class ScheduleCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.CharField(max_length=100)
    params = serializers.JSONField(required=False, default=dict)
    interval_seconds = serializers.IntegerField(required=False, min_value=1, max_value=INT_MAX)
    crontab = CrontabSerializer(required=False)
    clocked_at = serializers.DateTimeField(required=False)
    overlap = serializers.ChoiceField(choices=OverlapPolicy.values, default=OverlapPolicy.SKIP)
    enabled = StrictBooleanField(default=True)
    expire_seconds = serializers.IntegerField(
        required=False, min_value=1, max_value=INT_MAX, allow_null=True
    )
    description = serializers.CharField(required=False, default="", allow_blank=True)

    def to_spec(self) -> services.ScheduleSpec:
        data = self.validated_data
        crontab = data.get("crontab")
        return services.ScheduleSpec(
            name=data["name"],
            kind=data["kind"],
            params=data["params"],
            interval_seconds=data.get("interval_seconds"),
            crontab=dict(crontab) if crontab is not None else None,
            clocked_at=data.get("clocked_at"),
            overlap=data["overlap"],
            enabled=data["enabled"],
            expire_seconds=data.get("expire_seconds"),
            description=data["description"],
        )


class ScheduleSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    params = serializers.JSONField()
    schedule = serializers.CharField()
    overlap = serializers.CharField()
    enabled = serializers.BooleanField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    recent_slots = serializers.ListField(child=serializers.DictField())

    def to_representation(self, task: Any) -> dict[str, Any]:
        kind = kind_for_task(task.task)
        slots = ScheduleSlot.objects.filter(schedule=task.name).order_by("-due_at")[:10]
        return {
            "name": task.name,
            "kind": kind.name if kind else task.task,
            "params": json.loads(task.kwargs or "{}"),
            "schedule": str(task.scheduler) if task.scheduler else "",
            "overlap": services.overlap_policy(task),
            "enabled": task.enabled,
            "last_run_at": task.last_run_at.isoformat() if task.last_run_at else None,
            "total_run_count": task.total_run_count,
            "recent_slots": [
                {
                    "due_at": slot.due_at.isoformat(),
                    "outcome": slot.outcome,
                    "job_id": str(slot.job_id) if slot.job_id else None,
                    "detail": slot.detail,
                }
                for slot in slots
            ],
        }


def _staff(request: Request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may read or change schedules.")


STAFF_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Not staff"),
}


class ScheduleListView(APIView):
    @extend_schema(
        operation_id="schedules_list",
        responses={
            200: inline_serializer("ScheduleList", {"schedules": ScheduleSerializer(many=True)}),
            **STAFF_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        _staff(request)
        tasks = selectors.schedules_list()
        return Response({"schedules": ScheduleSerializer(tasks, many=True).data})

    @extend_schema(
        operation_id="schedules_create",
        request=ScheduleCreateSerializer,
        responses={
            201: ScheduleSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Invalid schedule"),
            409: ErrorSerializer,
            **STAFF_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        _staff(request)
        serializer = ScheduleCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task = services.schedule_create(spec=serializer.to_spec())
        return Response(ScheduleSerializer(task).data, status=201)


class ScheduleDetailView(APIView):
    def _get(self, request: Request, name: str) -> Any:
        _staff(request)
        task = selectors.schedule_get(name=name)
        if task is None:
            raise NotFound(f"No schedule named {name[:200]!r}.")
        return task

    @extend_schema(
        operation_id="schedules_get",
        responses={200: ScheduleSerializer, 404: ErrorSerializer, **STAFF_ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(ScheduleSerializer(self._get(request, name)).data)

    @extend_schema(
        operation_id="schedules_delete",
        responses={204: None, 404: ErrorSerializer, **STAFF_ERRORS},
    )
    def delete(self, request: Request, name: str) -> Response:
        services.schedule_delete(task=self._get(request, name))
        return Response(status=204)
