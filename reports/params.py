"""What a `report` job may ask for, checked at submit (a 400 naming the field, a 403 for
what only staff may ask), so a worker never starts a report it cannot finish.

Who may see what:
- `job_stats` counts the submitter's own jobs. Staff may add `"all_users": true` to count
  every job, system jobs (schedules, maintenance) included; anyone else asking for it gets
  a 403. A system job (a schedule's run, owner empty) counts every job.
- `contacts_export` reads the whole contact list, which belongs to no one user: staff only.
"""

from datetime import date
from typing import Any

from django.conf import settings
from rest_framework import serializers

from jobs.errors import PermissionDenied

REPORT_TYPES = ("job_stats", "contacts_export")
FORMATS = ("csv", "xlsx", "pdf")
# A contact list can be millions of rows: a PDF of it helps no one and costs a lot.
FORMATS_BY_TYPE = {"job_stats": FORMATS, "contacts_export": ("csv", "xlsx")}
FILTER_COUNTRIES_MAX = 300
FILTER_ATTRIBUTES_MAX = 20
ATTRIBUTE_KEY_MAX = 100
ATTRIBUTE_VALUE_MAX = 200
# Jobs carry times since 1970; the far end keeps "the day after `end`" a valid date.
EARLIEST, LATEST = date(1970, 1, 1), date(9998, 12, 31)
DAY_OUT_OF_RANGE = f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}"


class StrictSerializer(serializers.Serializer):
    """A nested serializer that refuses keys it does not know instead of ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key)[:50] for key in set(data) - set(self.fields))[:20]
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"unknown filter; known: {', '.join(self.fields)}"] for key in unknown}
                )
        return super().to_internal_value(data)


class CountryCodeField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data).upper()
        if len(value) != 2 or not value.isascii() or not value.isalpha():
            raise serializers.ValidationError(f"{value[:20]!r} is not a two-letter country code")
        return value


class ContactFilters(StrictSerializer):
    country = serializers.ListField(
        child=CountryCodeField(max_length=2, min_length=2),
        required=False,
        allow_empty=False,
        max_length=FILTER_COUNTRIES_MAX,
        help_text="Contacts in any of these countries (two-letter codes).",
    )
    subscribed = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only subscribed contacts; false: only unsubscribed ones; null: both.",
    )
    attributes = serializers.DictField(
        required=False,
        help_text="Contacts whose attributes hold all these key/value pairs (exact match).",
    )

    def validate_attributes(self, value: dict) -> dict:
        if len(value) > FILTER_ATTRIBUTES_MAX:
            raise serializers.ValidationError(f"at most {FILTER_ATTRIBUTES_MAX} attributes")
        for key, item in value.items():
            if not key or len(key) > ATTRIBUTE_KEY_MAX:
                raise serializers.ValidationError(
                    f"attribute names are 1-{ATTRIBUTE_KEY_MAX} characters"
                )
            if item is None or isinstance(item, dict | list):
                raise serializers.ValidationError(
                    f"attribute {key[:50]!r}: a value is a string, a number or true/false"
                )
            if isinstance(item, str) and len(item) > ATTRIBUTE_VALUE_MAX:
                raise serializers.ValidationError(
                    f"attribute {key[:50]!r}: values are at most {ATTRIBUTE_VALUE_MAX} characters"
                )
        return value


class ReportParams(serializers.Serializer):
    type = serializers.ChoiceField(choices=REPORT_TYPES)
    format = serializers.ChoiceField(choices=FORMATS)
    start = serializers.DateField(
        required=False, help_text="job_stats: first day (YYYY-MM-DD), in DJANGO_TIME_ZONE."
    )
    end = serializers.DateField(required=False, help_text="job_stats: last day, inclusive.")
    all_users = serializers.BooleanField(
        default=False, help_text="job_stats, staff only: every user's jobs, not only yours."
    )
    filters = ContactFilters(required=False, help_text="contacts_export: which contacts.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        kind = data["type"]
        if data["format"] not in FORMATS_BY_TYPE[kind]:
            raise serializers.ValidationError(
                {
                    "format": [
                        f"{kind} is made as {' or '.join(FORMATS_BY_TYPE[kind])}, "
                        f"not {data['format']}"
                    ]
                }
            )
        if kind == "job_stats":
            self._job_stats_validate(data)
        else:
            self._contacts_export_validate(data)
        return data

    def _owner_is_staff(self) -> bool:
        owner = self.context.get("owner")
        # No owner: trusted code (a schedule's run, the operator's command line).
        return owner is None or bool(owner.is_staff)

    def _job_stats_validate(self, data: dict[str, Any]) -> None:
        if "filters" in data:
            raise serializers.ValidationError({"filters": ["job_stats takes no filters"]})
        missing = [name for name in ("start", "end") if name not in data]
        if missing:
            raise serializers.ValidationError(
                {name: ["required for job_stats (YYYY-MM-DD)"] for name in missing}
            )
        range_check(start=data["start"], end=data["end"])
        if data["all_users"] and not self._owner_is_staff():
            raise PermissionDenied(
                "Only staff may count every user's jobs (all_users); leave it out to "
                "count your own.",
                fields={"all_users": ["staff only"]},
            )

    def _contacts_export_validate(self, data: dict[str, Any]) -> None:
        extra = [name for name in ("start", "end") if name in data]
        if data["all_users"]:
            extra.append("all_users")
        if extra:
            raise serializers.ValidationError(
                {name: ["job_stats only; contacts_export takes filters"] for name in extra}
            )
        if not self._owner_is_staff():
            raise PermissionDenied(
                "Only staff may export contacts.", fields={"type": ["staff only"]}
            )
        data.setdefault("filters", {})


def range_check(*, start: date, end: date) -> None:
    """Raise a ValidationError for an inverted or too long range (both days inclusive),
    or one outside the days a report can cover."""
    for name, day in (("start", start), ("end", end)):
        if not EARLIEST <= day <= LATEST:
            raise serializers.ValidationError({name: [DAY_OUT_OF_RANGE]})
    if end < start:
        raise serializers.ValidationError(
            {"end": [f"end {end.isoformat()} is before start {start.isoformat()}"]}
        )
    days = (end - start).days + 1
    limit = settings.OFFLOAD_REPORT_MAX_RANGE_DAYS
    if days > limit:
        raise serializers.ValidationError(
            {"end": [f"the range is {days} days; at most {limit} (OFFLOAD_REPORT_MAX_RANGE_DAYS)"]}
        )
