"""The kinds registry: one decorator turns a function into a job kind.

A kind is a name (`thumbnail`, `demo.sleep`), a Celery task, a params serializer, a queue,
a default priority, a retry policy, time limits and who may submit it. The decorated
function receives a `JobRun` (id, params, attempt, progress) and returns a small JSON
result.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from config.celery_app import app
from jobs.errors import NotFound


def _json_type(field: serializers.Field) -> tuple[str, tuple[type, ...]] | None:
    """The JSON type a field's value must have in a request body (None: any)."""
    if isinstance(field, serializers.BooleanField):
        return "a boolean", (bool,)
    if isinstance(field, serializers.IntegerField):
        return "a whole number", (int,)
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return "a number", (int, float)
    if isinstance(field, serializers.ChoiceField) and not isinstance(
        field, serializers.MultipleChoiceField
    ):
        if all(isinstance(choice, str) for choice in field.choices):
            return "a string", (str,)
        return None
    if isinstance(field, serializers.CharField | serializers.UUIDField | serializers.DateTimeField):
        return "a string", (str,)
    if isinstance(field, serializers.ListField | serializers.ListSerializer):
        return "a list", (list,)
    if isinstance(field, serializers.DictField | serializers.Serializer):
        return "an object", (dict,)
    return None


def json_type_errors(fields: Any, data: Any) -> dict[str, list[str]]:
    """Values of the wrong JSON type, by field name. DRF converts leniently (`"5"` or `true`
    for a number, `1` for a boolean); a JSON API should refuse what its schema refuses."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        return errors
    for name, declared in fields.items():
        if name not in data or data[name] is None or declared.read_only:
            continue
        expected = _json_type(declared)
        if expected is None:
            continue
        what, types = expected
        value = data[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            errors[name] = [f"must be {what}, not {type(value).__name__}"]
            continue
        child = getattr(declared, "child", None)
        if isinstance(declared, serializers.ListField) and child is not None:
            item = _json_type(child)
            if item is not None:
                bad = [
                    i for i, v in enumerate(value)
                    if not isinstance(v, item[1]) or (isinstance(v, bool) and bool not in item[1])
                ]  # fmt: skip
                if bad:
                    errors[name] = [f"item {bad[0]} must be {item[0]}"]
    return errors


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean and nothing else: DRF's BooleanField also takes 1, "yes" or "on",
    which the schema (`type: boolean`) does not allow."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


if TYPE_CHECKING:
    from jobs.runtime import JobRun

QUEUES = ("default", "bulk", "notifications")
TASK_PREFIX = "jobs.kind."


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors are transient, and how long to wait between attempts.

    Only exceptions listed in `on` are retried; anything else fails the job at once.
    The delay is exponential with full jitter: uniform(0, min(cap, base * 2**n)).
    """

    on: tuple[type[BaseException], ...] = ()
    max_attempts: int = 3
    backoff: float = 2.0
    backoff_max: float = 600.0

    def is_transient(self, exc: BaseException) -> bool:
        return bool(self.on) and isinstance(exc, self.on)

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff * 2 ** max(attempt - 1, 0)))


NO_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Kind:
    name: str
    func: Callable[["JobRun"], Any]
    params: type[serializers.Serializer]
    queue: str = "default"
    priority: int = 0
    retry: RetryPolicy = NO_RETRY
    soft_time_limit: float | None = None
    time_limit: float | None = None
    staff_only: bool = False
    idempotent: bool = True
    max_deliveries: int = 3
    concurrency_key: Callable[[Any], str] | None = None
    concurrency_limit: int = 1
    stale_after: float | None = None
    description: str = ""
    task: Any = field(default=None, compare=False, repr=False)

    @property
    def task_name(self) -> str:
        return TASK_PREFIX + self.name


def _concurrency_key_fn(key: str | Callable[[Any], str] | None) -> Callable[[Any], str] | None:
    if key is None or callable(key):
        return key
    if key == "owner":
        return lambda job: f"owner:{job.owner_id or 'system'}"
    raise ValueError(f"concurrency_key must be 'owner' or a function, not {key!r}")


_kinds: dict[str, Kind] = {}
_by_task: dict[str, Kind] = {}


def job_kind(
    name: str,
    *,
    params: type[serializers.Serializer],
    queue: str = "default",
    priority: int = 0,
    retry: RetryPolicy = NO_RETRY,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    staff_only: bool = False,
    idempotent: bool = True,
    max_deliveries: int = 3,
    concurrency_key: str | Callable[[Any], str] | None = None,
    concurrency_limit: int = 1,
    stale_after: float | None = None,
) -> Callable[[Callable[["JobRun"], Any]], Kind]:
    """Register a job kind. Idempotent kinds get late acks and are requeued when their
    worker dies; the others are acknowledged on receipt and guard their effects.

    `max_deliveries`: how many times a message may be delivered without finishing (its
    worker died, or a hard time limit killed it) before the job is declared dead and the
    message dead-lettered, instead of crash-looping.

    `concurrency_key`: "owner", or a function of the job returning a key; at most
    `concurrency_limit` jobs with the same key run at once across all workers (see
    jobs/concurrency.py).

    `stale_after`: seconds without a heartbeat after which a running job of this kind whose
    worker is gone is reaped (default OFFLOAD_REAPER_STALE_SECONDS; see jobs/kinds/reaper.py)."""
    if queue not in QUEUES:
        raise ValueError(f"kind {name!r}: queue must be one of {QUEUES}, not {queue!r}")
    if not 0 <= priority <= 9:
        raise ValueError(f"kind {name!r}: priority must be 0-9")

    def decorator(func: Callable[["JobRun"], Any]) -> Kind:
        from jobs.runtime import JobTask

        kind = Kind(
            name=name,
            func=func,
            params=params,
            queue=queue,
            priority=priority,
            retry=retry,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            staff_only=staff_only,
            idempotent=idempotent,
            max_deliveries=max_deliveries,
            concurrency_key=_concurrency_key_fn(concurrency_key),
            concurrency_limit=concurrency_limit,
            stale_after=stale_after,
            description=(func.__doc__ or "").strip().split("\n")[0],
        )
        task = app.task(
            name=kind.task_name,
            base=JobTask,
            bind=True,
            queue=queue,
            acks_late=idempotent,
            reject_on_worker_lost=idempotent,
            # A failed late-ack message is rejected, not acked: it goes to the dead-letter
            # queue; a hard time limit requeues it (counted as a delivery, see max_deliveries).
            acks_on_failure_or_timeout=not idempotent,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            ignore_result=True,
            max_retries=max(retry.max_attempts - 1, 0),
            typing=False,
        )(JobTask.run_kind)
        object.__setattr__(kind, "task", task)
        if name in _kinds and _kinds[name].func is not func:
            raise ValueError(f"job kind {name!r} is registered twice")
        _kinds[name] = kind
        _by_task[kind.task_name] = kind
        return kind

    return decorator


def kind_get(name: str) -> Kind:
    try:
        return _kinds[name]
    except KeyError:
        raise NotFound(
            f"Unknown job kind {name!r}. Known kinds: {', '.join(sorted(_kinds))}.",
            code="unknown_kind",
            status=400,
            fields={"kind": [f"unknown kind {name!r}"]},
        ) from None


def kind_for_task(task_name: str) -> Kind | None:
    return _by_task.get(task_name)


def kinds_all() -> list[Kind]:
    return sorted(_kinds.values(), key=lambda k: k.name)
