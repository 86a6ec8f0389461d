"""What the cleanup kind may delete, declared by the app that owns the data.

An app registers a category once (usually in its `kinds` module or AppConfig.ready):

    retention_register("uploads", model=Upload, age_field="created_at",
                       days_setting="OFFLOAD_RETENTION_UPLOADS_DAYS", default_days=30)

The cleanup kind walks every category and deletes rows older than their retention in
bounded batches, calling `before_delete(rows)` first when files must go with them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Model, Q


@dataclass(frozen=True)
class RetentionCategory:
    name: str
    model: type[Model]
    age_field: str
    days_setting: str
    default_days: int
    filter: Q | None = None
    before_delete: Callable[[list[Any]], None] | None = None


_categories: dict[str, RetentionCategory] = {}


def retention_register(
    name: str,
    *,
    model: type[Model],
    age_field: str,
    days_setting: str,
    default_days: int,
    filter: Q | None = None,
    before_delete: Callable[[list[Any]], None] | None = None,
) -> RetentionCategory:
    category = RetentionCategory(
        name, model, age_field, days_setting, default_days, filter, before_delete
    )
    _categories[name] = category
    return category


def retention_categories() -> list[RetentionCategory]:
    return sorted(_categories.values(), key=lambda c: c.name)
