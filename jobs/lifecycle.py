"""The job lifecycle: the only place that changes a job's status.

Every move is one conditional `UPDATE … WHERE status IN (legal sources) RETURNING …`, so a
late or duplicate signal simply matches no row and never moves a job backwards, even when
two processes race. Every move (and every progress write) bumps `version` and publishes one
event after commit.

Legal moves (target <- sources). Beyond the diagram in DESIGN.md: `running -> running` is a
redelivery after a lost worker, `retrying -> cancelled` lets a waiting retry be cancelled,
`cancelled -> queued` is the API's retry of a cancelled job, and `queued|retrying -> failed|dead`
ends a job whose run was lost before its running move was written.

A run's own writes (`job_run_write`) are fenced by the version the run claimed: only the run
that saw version v can write, and only while the job is still at v (or at the versions the
run's own writes produced). That makes two things safe: a run that finishes within a few
milliseconds folds its running move into its terminal write (one write per job instead of
two), and a cancel, requeue or reaper move made meanwhile always wins over the run.
"""

import json
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from jobs import events
from jobs.models import Job, JobStatus

S = JobStatus
LEGAL_SOURCES: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.SCHEDULED, S.FAILED, S.DEAD, S.CANCELLED}),
    S.RUNNING: frozenset({S.QUEUED, S.RETRYING, S.RUNNING}),
    S.RETRYING: frozenset({S.RUNNING}),
    S.SUCCEEDED: frozenset({S.RUNNING}),
    S.FAILED: frozenset({S.QUEUED, S.RUNNING, S.RETRYING}),
    S.DEAD: frozenset({S.QUEUED, S.RUNNING, S.RETRYING}),
    S.CANCELLED: frozenset({S.SCHEDULED, S.QUEUED, S.RUNNING, S.RETRYING}),
    S.SCHEDULED: frozenset(),
}
# What a run may have claimed from: its fenced writes accept these (see the module docstring).
RUN_SOURCES = frozenset({S.QUEUED, S.RETRYING, S.RUNNING})

_TABLE = Job._meta.db_table
_JSON_FIELDS = frozenset({"params", "result", "error", "history"})
RETURNED = (
    "kind",
    "owner_id",
    "status",
    "version",
    "attempts",
    "progress_percent",
    "progress_current",
    "progress_total",
    "progress_message",
    "result",
    "error",
    "concurrency_key",
    "callback_url",
)
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED})
# Columns a terminal move also returns for the after-commit hooks, computed by the same
# statement instead of a query of their own: {name: SQL expression over the job's row}.
_TERMINAL_EXTRAS: dict[str, str] = {}


def terminal_returning_add(name: str, expression: str) -> None:
    """Have every terminal move also return `expression` (SQL written in code, never from
    input; it may name the job's columns, e.g. `owner_id`) as `row[name]`."""
    _extra_name_check(name, RETURNED)
    _TERMINAL_EXTRAS[name] = expression


def _extra_name_check(name: str, taken: Iterable[str]) -> None:
    if not name.isidentifier() or name in taken:
        raise ValueError(f"bad extra column name {name!r}")


def _extra_columns(extras: dict[str, str]) -> list[str]:
    return [f"({expression}) AS {name}" for name, expression in extras.items()]


class Coalesce:
    """Set a column only if it is still empty: `col = COALESCE(col, value)`."""

    def __init__(self, value: Any) -> None:
        self.value = value


def can_move(source: str, target: str) -> bool:
    return source in LEGAL_SOURCES[target]


def _adapt(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS and value is not None:
        return json.dumps(value)
    if hasattr(value, "tzinfo"):
        return connection.ops.adapt_datetimefield_value(value)
    return value


def _row(job_id: uuid.UUID, names: Iterable[str], values: Iterable[Any]) -> dict[str, Any]:
    row = dict(zip(names, values, strict=True))
    for name in _JSON_FIELDS & row.keys():
        if isinstance(row[name], str):
            row[name] = json.loads(row[name])
    row["id"] = job_id
    return row


def _update(
    job_id: uuid.UUID | str,
    *,
    sets: dict[str, Any],
    where_status: Iterable[str],
    increments: Iterable[str] = (),
    returning: Iterable[str] = RETURNED,
    version: int | None = None,
    bump: bool = True,
    before: Iterable[tuple[str, list[Any]]] = (),
) -> dict[str, Any] | None:
    job_id = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    statuses = list(where_status)
    if not statuses:
        return None
    assignments = ["version = version + 1"] if bump else []
    assignments += [f"{name} = {name} + 1" for name in increments]
    params: list[Any] = []
    for name, value in sets.items():
        if isinstance(value, Coalesce):
            assignments.append(f"{name} = COALESCE({name}, %s)")
            value = value.value
        else:
            assignments.append(f"{name} = %s")
        params.append(_adapt(name, value))
    returning = tuple(returning)
    columns = list(returning)
    if sets.get("status") in TERMINAL and _TERMINAL_EXTRAS:
        returning += tuple(_TERMINAL_EXTRAS)
        columns += _extra_columns(_TERMINAL_EXTRAS)
    # Column names come from this module's callers, never from input; values are bound.
    sql = (
        f"UPDATE {_TABLE} SET {', '.join(assignments)} "  # noqa: S608
        f"WHERE id = %s AND status IN ({', '.join(['%s'] * len(statuses))})"
    )
    params.append(_job_id_param(job_id))
    params.extend(statuses)
    if version is not None:
        sql += " AND version = %s"
        params.append(version)
    sql += f" RETURNING {', '.join(columns)}"
    before = list(before)
    with connection.cursor() as cursor:
        if before:
            # One query, so one round trip and one transaction (see multi_statement_ok).
            cursor.execute(
                ";\n".join([*(statement for statement, _ in before), sql]),
                [*(value for _, values in before for value in values), *params],
            )
            for _ in before:
                cursor.nextset()
        else:
            cursor.execute(sql, params)
        values = cursor.fetchone()
    if values is None:
        return None
    row = _row(job_id, returning, values)
    if bump:
        transaction.on_commit(lambda: events.event_publish(events.event_from_row(row), row=row))
    if row.get("concurrency_key") and row.get("status") in TERMINAL:
        from jobs import concurrency

        key = row["concurrency_key"]
        transaction.on_commit(lambda: concurrency.slots_release(key=key))
    return row


def multi_statement_ok() -> bool:
    """Whether several statements can go in one query: PostgreSQL with client-side binding
    sends them in one simple-protocol message, which runs as one transaction."""
    options = connection.settings_dict.get("OPTIONS", {})
    return connection.vendor == "postgresql" and not options.get("server_side_binding")


def _job_id_param(job_id: uuid.UUID) -> Any:
    # PostgreSQL has a native uuid type; SQLite stores the 32-char hex form.
    return job_id if connection.features.has_native_uuid_field else job_id.hex


def job_move(
    *,
    job_id: uuid.UUID | str,
    to: str,
    sets: dict[str, Any] | None = None,
    increments: Iterable[str] = (),
    returning: Iterable[str] = RETURNED,
) -> dict[str, Any] | None:
    """Move a job to `to` if its current status allows it; return the moved row, or None
    when the move is not legal (or the job is gone)."""
    return _update(
        job_id,
        sets={"status": str(to), **(sets or {})},
        where_status=LEGAL_SOURCES[to],
        increments=increments,
        returning=returning,
    )


def progress_sets(*, current: int, total: int | None, message: str) -> dict[str, Any]:
    percent = None
    if total:
        percent = round(min(max(current / total, 0.0), 1.0) * 100, 2)
    return {
        "progress_current": current,
        "progress_total": total,
        "progress_percent": percent,
        "progress_message": message[:500],
        "heartbeat_at": timezone.now(),
    }


def job_progress_set(
    *, job_id: uuid.UUID | str, current: int, total: int | None, message: str = ""
) -> bool:
    """Write a running job's progress (unfenced); False when it is no longer running."""
    sets = progress_sets(current=current, total=total, message=message)
    return _update(job_id, sets=sets, where_status=[S.RUNNING]) is not None


_CLAIMED = (
    "kind",
    "status",
    "version",
    "attempts",
    "deliveries",
    "params",
    "created_at",
    "idempotency_key",
)


# What a kind's claim read also returns, so that its run need not ask: {kind: {name: SQL}}.
_CLAIM_EXTRAS: dict[str, dict[str, str]] = {}


def params_uuid_sql(key: str, *, row: str = _TABLE) -> str:
    """SQL for the uuid a job's params name under `key` (`row`: the table or CTE holding
    the job): NULL when it is missing or malformed, never a cast error."""
    value = f"{row}.params->>'{key}'"
    return f"CASE WHEN {value} ~ '^[0-9a-fA-F-]{{32,36}}$' THEN ({value})::uuid END"


def claim_returning_add(kind: str, name: str, expression: str) -> None:
    """Have the claim read of `kind`'s jobs also return `expression` as `run.claimed[name]`:
    PostgreSQL SQL written in code, never from input, over the job's row (`owner_id`,
    `params`). Only asked for on PostgreSQL; elsewhere `name` is missing from
    `run.claimed` and the kind reads it itself."""
    _extra_name_check(name, _CLAIMED)
    _CLAIM_EXTRAS.setdefault(kind, {})[name] = expression


# A write a kind's claim read also makes, in the same query: {kind: (name, SQL, ahead)}.
_CLAIM_WRITES: dict[str, tuple[str, str, str]] = {}
# What a claim write's SQL calls the row the claim read found (its columns and extras).
CLAIMED_ROW = "claimed_job"


def claim_write_add(kind: str, name: str, sql: str, *, ahead: str = "") -> None:
    """Have the claim read of `kind`'s jobs also run `sql`, one data-modifying statement
    (`UPDATE … RETURNING …`) that names the claimed job as `CLAIMED_ROW` (its `params`,
    `owner_id`), in the same query and transaction: it writes nothing when the job is not
    waiting to run. Its first returned row, as a JSON object, is `run.claimed[name]` (None
    when it matched nothing). `ahead`: a statement sent before it in the same query (such
    as `SET LOCAL`). SQL written in code, never from input; only where
    `multi_statement_ok()`: elsewhere `name` is missing from `run.claimed` and the kind
    makes the write itself."""
    _extra_name_check(name, _CLAIMED)
    _CLAIM_WRITES[kind] = (name, sql, ahead)


def job_claim(
    *, job_id: uuid.UUID | str, kind: str = "", writes: bool = True
) -> dict[str, Any] | None:
    """Read what a run needs before it starts: None when the job is not waiting to run
    (cancelled, finished, or gone). Raw SQL: this runs once per job. `row["claimed"]`
    holds the extras `kind` registered (see claim_returning_add) and, with `writes`, the
    result of its claim write (see claim_write_add)."""
    job_id = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    sources = sorted(RUN_SOURCES)
    extras = _CLAIM_EXTRAS.get(kind, {}) if connection.vendor == "postgresql" else {}
    write = _CLAIM_WRITES.get(kind) if writes and multi_statement_ok() else None
    columns = [*_CLAIMED, *_extra_columns(extras)]
    sql = (
        f"SELECT {', '.join(columns)} FROM {_TABLE} "  # noqa: S608
        f"WHERE id = %s AND status IN ({', '.join(['%s'] * len(sources))})"
    )
    names = [*_CLAIMED, *extras]
    with connection.cursor() as cursor:
        if write is None:
            cursor.execute(sql, [_job_id_param(job_id), *sources])
        else:
            name, write_sql, ahead = write
            names.append(name)
            # One query, so one round trip and one transaction (see multi_statement_ok).
            cursor.execute(
                f"{ahead}WITH {CLAIMED_ROW} AS ({sql}), written AS ({write_sql}) "  # noqa: S608
                f"SELECT {CLAIMED_ROW}.*, (SELECT to_jsonb(w) FROM written w LIMIT 1) "
                f"FROM {CLAIMED_ROW}",
                [_job_id_param(job_id), *sources],
            )
            if ahead:
                cursor.nextset()
        values = cursor.fetchone()
    if values is None:
        return None
    row = _row(job_id, _CLAIMED, values[: len(_CLAIMED)])
    claimed = dict(zip(names[len(_CLAIMED) :], values[len(_CLAIMED) :], strict=True))
    if write is not None and isinstance(claimed[write[0]], str):
        claimed[write[0]] = json.loads(claimed[write[0]])
    row["claimed"] = claimed
    return row


def job_run_write(
    *,
    job_id: uuid.UUID | str,
    version: int,
    to: str,
    sets: dict[str, Any] | None = None,
    where_status: Iterable[str] = RUN_SOURCES,
    bump: bool = True,
    before: Iterable[tuple[str, list[Any]]] = (),
) -> dict[str, Any] | None:
    """A write by the run holding `version` (its fencing token). Returns the row (with the
    new version), or None when anything else changed the job since. `before`: statements
    (SQL, params) sent ahead of it in the same query and transaction, which run whether or
    not the job's write matches (only where `multi_statement_ok()`)."""
    return _update(
        job_id,
        sets={"status": str(to), **(sets or {})},
        where_status=where_status,
        version=version,
        bump=bump,
        before=before,
    )


def job_requeue_undo(
    *, job_id: uuid.UUID | str, status: str, version: int, history: list | None = None
) -> bool:
    """Put a requeued job back to the status it had when its message could not be
    published. Matches only the exact version the requeue wrote, so it never undoes a
    later move."""
    restore: dict[str, Any] = {"status": status, "version": version + 1}
    if history is not None:
        restore["history"] = history
    updated = Job.objects.filter(id=job_id, status=S.QUEUED, version=version).update(**restore)
    return updated == 1


def job_cancelled_result_set(*, job_id: uuid.UUID | str, result: dict[str, Any]) -> bool:
    """Record what a cancelled run had done when it stopped (e.g. the rows an import had
    committed). Touches only a cancelled job; like every change it bumps the version and
    publishes an event."""
    return _update(job_id, sets={"result": result}, where_status=[S.CANCELLED]) is not None
