"""What the OpenAPI schema says beyond what drf-spectacular infers, so that it describes exactly
what the API accepts and answers (CI fuzzes the live API against it).

- A submit body is one of the registered kinds, discriminated by `kind`, each with its own
  params schema (taken from the kind's params serializer).
- Request bodies refuse unknown fields (StrictSerializer), so their components say
  `additionalProperties: false`; their plain strings refuse NUL, as DRF does.
- A reader who is not staff sees only the kinds they may submit.
- URLs have the shape the outbound guard accepts; choices a serializer's `validate` makes
  (ids or a kind, exactly one schedule timing) are `anyOf`/`oneOf`; such bodies are required.
- Every operation may answer 503 while the database or the broker refuses connections.
"""

from functools import cache
from typing import Any

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from jobs.registry import Kind, kinds_all

URL_HELP = "An http(s) URL on a public address; private, loopback and link-local hosts are refused."
# What a webhook URL must look like; the address checks happen on top of it.
URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]+([/?#][!-~]*)?$"


def _component_name(kind: Kind) -> str:
    return "".join(part.capitalize() for part in kind.name.replace("_", ".").split(".")) + "Submit"


def _kind_component(kind: Kind) -> type[serializers.Serializer]:
    required = any(field.required for field in kind.params().fields.values())
    name = _component_name(kind)
    return type(
        name,
        (serializers.Serializer,),
        {
            "__doc__": kind.description or f"Submit a {kind.name} job.",
            "kind": serializers.ChoiceField(choices=[kind.name]),
            "params": kind.params(required=required),
            "priority": serializers.IntegerField(min_value=0, max_value=9, required=False),
            # Empty means none, as the submit serializer accepts it.
            "callback_url": serializers.CharField(
                max_length=2000, required=False, allow_blank=True, help_text=URL_HELP
            ),
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


NO_NUL = r"^[^\u0000]*$"


def _no_nul(schema: dict[str, Any]) -> None:
    """DRF's CharField refuses a NUL character in any text; say so on every plain string."""
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "string" and not prop.keys() & {"format", "enum", "pattern"}:
            prop["pattern"] = NO_NUL
        elif prop.get("type") == "array" and prop.get("items", {}).get("type") == "string":
            items = prop["items"]
            if not items.keys() & {"format", "enum", "pattern"}:
                items["pattern"] = NO_NUL


def _strict_requests(schemas: dict[str, Any]) -> None:
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
            _no_nul(schema)


def _staff_kinds_hide(schemas: dict[str, Any], request: Any) -> None:
    """A user who is not staff reads a schema without the kinds only staff may submit."""
    user = getattr(request, "user", None)
    if request is None or (user is not None and user.is_staff):
        return
    submit = schemas.get("JobSubmitRequest")
    if submit is None:
        return
    for kind in kinds_all():
        if not kind.staff_only:
            continue
        name = _component_name(kind)
        ref = f"#/components/schemas/{name}Request"
        submit["oneOf"] = [one for one in submit["oneOf"] if one.get("$ref") != ref]
        submit.get("discriminator", {}).get("mapping", {}).pop(kind.name, None)
        schemas.pop(f"{name}Request", None)
        schemas.pop(f"{name}KindEnum", None)


def _url_patterns(schemas: dict[str, Any]) -> None:
    for name in ("EndpointWriteRequest", "PatchedEndpointWriteRequest"):
        url = schemas.get(name, {}).get("properties", {}).get("url")
        if url is not None:
            url.update(pattern=URL_PATTERN, description=URL_HELP)
    for name, schema in schemas.items():
        callback = schema.get("properties", {}).get("callback_url")
        if name.endswith("SubmitRequest") and callback is not None:
            callback["pattern"] = f"^$|{URL_PATTERN}"


UNAVAILABLE = {
    "description": "The database or the broker is unavailable; retry after `Retry-After`.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _unavailable_documented(result: dict[str, Any]) -> None:
    """Any API operation answers 503 while PostgreSQL or RabbitMQ refuses connections."""
    if "Error" not in result.get("components", {}).get("schemas", {}):
        return
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("503", UNAVAILABLE)


def _either_or(schemas: dict[str, Any]) -> None:
    """Choices between fields that a serializer's `validate` makes and drf-spectacular cannot
    see: a requeue names ids or a kind; a schedule has exactly one of its three timings."""
    requeue = schemas.get("JobRequeueRequest")
    if requeue is not None:
        requeue["anyOf"] = [
            {"required": ["kind"]},
            {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
        ]
    schedule = schemas.get("ScheduleCreateRequest")
    if schedule is not None:
        # oneOf: exactly one subschema matches, so exactly one timing is given.
        timings = ("interval_seconds", "crontab", "clocked_at")
        schedule["oneOf"] = [{"required": [timing]} for timing in timings]
        schedule["properties"]["params"] = {"type": "object", "additionalProperties": True}
        schedule["properties"]["kind"] = {
            "type": "string",
            "enum": sorted(k.name for k in kinds_all()),
        }


def _bodies_required(result: dict[str, Any]) -> None:
    """A body whose schema demands a field (or one of several) cannot be left out."""
    schemas = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body is None:
                continue
            for content in body.get("content", {}).values():
                ref = content.get("schema", {}).get("$ref", "")
                schema = schemas.get(ref.rsplit("/", 1)[-1], {})
                if schema.get("required") or schema.get("anyOf") or schema.get("oneOf"):
                    body["required"] = True


def postprocess(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS)."""
    schemas = result.get("components", {}).get("schemas", {})
    _strict_requests(schemas)
    _staff_kinds_hide(schemas, request)
    _url_patterns(schemas)
    _unavailable_documented(result)
    _either_or(schemas)
    _bodies_required(result)
    bulk = schemas.get("JobBulkSubmitRequest", {}).get("properties", {}).get("jobs")
    if bulk is not None:
        bulk.update(minItems=1, maxItems=settings.OFFLOAD_BULK_MAX)
    return result
