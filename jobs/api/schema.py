"""What the OpenAPI schema says beyond what drf-spectacular infers, so that it describes exactly
what the API accepts and answers (CI fuzzes the live API against it).

- A submit body is one of the registered kinds, discriminated by `kind`, each with its own
  params schema (taken from the kind's params serializer).
- Request bodies refuse unknown fields (StrictSerializer), so their components say
  `additionalProperties: false`.
"""

from functools import cache
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from jobs.registry import Kind, kinds_all


def _kind_component(kind: Kind) -> type[serializers.Serializer]:
    required = any(field.required for field in kind.params().fields.values())
    name = "".join(part.capitalize() for part in kind.name.replace("_", ".").split(".")) + "Submit"
    return type(
        name,
        (serializers.Serializer,),
        {
            "__doc__": kind.description or f"Submit a {kind.name} job.",
            "kind": serializers.ChoiceField(choices=[kind.name]),
            "params": kind.params(required=required),
            "priority": serializers.IntegerField(min_value=0, max_value=9, required=False),
            "callback_url": serializers.URLField(max_length=2000, required=False),
        },
    )


@cache
def job_submit_schema() -> PolymorphicProxySerializer:
    return PolymorphicProxySerializer(
        component_name="JobSubmit",
        serializers={kind.name: _kind_component(kind) for kind in kinds_all()},
        resource_type_field_name="kind",
    )


@cache
def job_bulk_submit_schema() -> type[serializers.Serializer]:
    return type(
        "JobBulkSubmit",
        (serializers.Serializer,),
        {
            "jobs": PolymorphicProxySerializer(
                component_name="JobSubmit",
                serializers={kind.name: _kind_component(kind) for kind in kinds_all()},
                resource_type_field_name="kind",
                many=True,
            )
        },
    )


def _strict_requests(schemas: dict[str, Any]) -> None:
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False


def postprocess(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS)."""
    schemas = result.get("components", {}).get("schemas", {})
    _strict_requests(schemas)
    bulk = schemas.get("JobBulkSubmitRequest", {}).get("properties", {}).get("jobs")
    if bulk is not None:
        bulk.update(minItems=1, maxItems=settings.OFFLOAD_BULK_MAX)
    return result
