"""Request and response shapes of the webhooks API."""

from typing import Any

from rest_framework import serializers

from jobs.api.serializers import StrictSerializer
from jobs.registry import StrictBooleanField
from notifications.models import Delivery, Endpoint
from notifications.services import EVENT_TYPES


class EndpointWriteSerializer(StrictSerializer):
    url = serializers.CharField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), required=False, default=list
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = StrictBooleanField(required=False)


class EndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    secret = serializers.CharField(help_text="whsec_… secret that signs deliveries")
    previous_secret_valid_until = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    def to_representation(self, endpoint: Endpoint) -> dict[str, Any]:
        return {
            "id": endpoint.id,
            "url": endpoint.url,
            "description": endpoint.description,
            "event_types": endpoint.event_types,
            "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason,
            "secret": endpoint.secret,
            "previous_secret_valid_until": _when(endpoint.previous_valid_until),
            "created_at": _when(endpoint.created_at),
        }


class CallbackSecretSerializer(serializers.Serializer):
    secret = serializers.CharField()
    previous_secret_valid_until = serializers.DateTimeField(allow_null=True)

    def to_representation(self, holder: Any) -> dict[str, Any]:
        return {
            "secret": holder.secret,
            "previous_secret_valid_until": _when(holder.previous_valid_until),
        }


class DeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    endpoint = serializers.IntegerField(allow_null=True)
    job_id = serializers.UUIDField(allow_null=True)
    url = serializers.CharField()
    event_type = serializers.CharField()
    message_id = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    last_latency_ms = serializers.FloatField(allow_null=True)
    payload = serializers.JSONField()
    log = serializers.JSONField()
    created_at = serializers.DateTimeField()

    def to_representation(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "id": str(delivery.id),
            "endpoint": delivery.endpoint_id,
            "job_id": str(delivery.job_id) if delivery.job_id else None,
            "url": delivery.url,
            "event_type": delivery.event_type,
            "message_id": delivery.message_id,
            "status": delivery.status,
            "attempts": delivery.attempts,
            "next_attempt_at": _when(delivery.next_attempt_at),
            "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error,
            "last_latency_ms": delivery.last_latency_ms,
            "payload": delivery.payload,
            "log": delivery.log,
            "created_at": _when(delivery.created_at),
        }


def _when(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
