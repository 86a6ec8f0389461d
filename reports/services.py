"""Making a report file: read, write to a temporary file, store it, link it.

The file is written in full to a temporary folder first and only then stored (Django's
default storage, a `StoredFile` of purpose `report` owned by the job's owner, named after
the job, so a redelivered job replaces its own file). A failed or cancelled run stores
nothing.
"""

import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from django.core.files import File
from django.db import connection

from jobs import uploads
from jobs.models import FilePurpose, StoredFile
from reports import links, selectors
from reports.writers import Column, Table, csv_copy_write, csv_write, xlsx_write

logger = logging.getLogger(__name__)

CONTENT_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
Progress = Callable[[int, int | None, str], None]


@dataclass
class Made:
    stored: StoredFile
    rows: int
    summary: dict[str, Any]


def job_stats_tables(stats: selectors.JobStats) -> list[Table]:
    seconds = [Column(f"{name}_s", "float", 10) for name in ("mean", "p50", "p95", "p99")]
    return [
        Table(
            "summary",
            [Column("item", width=22), Column("value", width=24)],
            [
                ("start", stats.start.isoformat()),
                ("end", stats.end.isoformat()),
                ("scope", "all users" if stats.all_users else "own jobs"),
                *((f"jobs {name}", str(count)) for name, count in stats.totals().items()),
            ],
        ),
        Table(
            "counts",
            [Column("kind", width=24), Column("status"), Column("jobs", "int", 10)],
            [(r["kind"], r["status"], r["count"]) for r in stats.counts],
        ),
        Table(
            "durations",
            [
                Column("kind", width=24),
                Column("runs", "int", 10),
                *seconds,
                Column("min_s", "float", 10),
                Column("max_s", "float", 10),
            ],
            [
                (r["kind"], r["count"], r["mean"], r["p50"], r["p95"], r["p99"], r["min"], r["max"])
                for r in stats.durations
            ],
        ),
        Table(
            "errors",
            [
                Column("kind", width=24),
                Column("type", width=20),
                Column("message", width=80),
                Column("jobs", "int", 10),
            ],
            [(r["kind"], r["type"], r["message"], r["count"]) for r in stats.errors],
        ),
        Table(
            "throughput",
            [
                Column("hour", "datetime", 20),
                Column("finished", "int", 10),
                Column("succeeded", "int", 10),
            ],
            stats.hours(),
        ),
    ]


def contacts_table(filters: dict[str, Any]) -> Table:
    columns = [Column(name, kind, 30 if name == "email" else 16) for name, kind in
               selectors.CONTACT_COLUMNS]  # fmt: skip
    return Table("contacts", columns, selectors.contacts_rows(selectors.contacts_filtered(filters)))


def _file_name(params: dict[str, Any]) -> str:
    if params["type"] == "job_stats":
        return f"job-stats-{params['start']}-{params['end']}.{params['format']}"
    return f"contacts-export.{params['format']}"


def report_make(
    *,
    params: dict[str, Any],
    owner_id: int | None,
    job_id: uuid.UUID,
    progress: Progress,
) -> Made:
    """Make the report `params` asks for (validated ReportParams) and store it.
    `owner_id` owns the file; for job_stats it also scopes the jobs counted unless
    `all_users` (None: a system job, every job is counted)."""
    fmt = params["format"]
    name = _file_name(params)
    with tempfile.TemporaryDirectory(prefix="offload-report-") as folder:
        path = Path(folder) / name
        if params["type"] == "job_stats":
            rows, summary = _job_stats_write(params, owner_id, path, progress)
        else:
            rows, summary = _contacts_write(params, path, progress)
        with path.open("rb") as source:
            stored = uploads.output_save(
                name=f"reports/{job_id}/{name}",
                content=File(source, name=name),
                owner_id=owner_id,
                job_id=job_id,
                purpose=FilePurpose.REPORT,
                content_type=CONTENT_TYPES[fmt],
            )
    return Made(stored=stored, rows=rows, summary=summary)


def _job_stats_write(
    params: dict[str, Any], owner_id: int | None, path: Path, progress: Progress
) -> tuple[int, dict[str, Any]]:
    stats = selectors.job_stats(
        start=date.fromisoformat(params["start"]),
        end=date.fromisoformat(params["end"]),
        owner_id=None if params.get("all_users") else owner_id,
    )
    progress(1, 2, "statistics read")
    tables = job_stats_tables(stats)
    if params["format"] == "pdf":
        from reports.pdf import job_stats_pdf

        job_stats_pdf(stats, path)
        rows = sum(len(table.rows) for table in tables)
    else:
        writer = csv_write if params["format"] == "csv" else xlsx_write
        rows = writer(tables, path, on_row=lambda n: None)
    progress(2, 2, "written")
    return rows, {"totals": stats.totals(), "kinds": len({r["kind"] for r in stats.counts})}


def _contacts_write(
    params: dict[str, Any], path: Path, progress: Progress
) -> tuple[int, dict[str, Any]]:
    filters = params.get("filters") or {}
    total = selectors.contacts_filtered(filters).count()
    progress(0, total, f"exporting {total} contacts")

    def on_row(done: int) -> None:
        # Stops the export here (JobCancelled) when the job was cancelled.
        progress(done, max(total, done), f"{done} of {total} contacts")

    table = contacts_table(filters)
    if params["format"] == "xlsx":
        rows = xlsx_write([table], path, on_row=on_row)
    elif connection.vendor == "postgresql":
        select = selectors.contacts_csv_select(selectors.contacts_filtered(filters))
        rows = csv_copy_write(columns=table.columns, select=select, path=path, on_row=on_row)
    else:
        rows = csv_write([table], path, on_row=on_row)
    progress(rows, rows, f"{rows} contacts exported")
    return rows, {"filters": filters}


def report_result(*, params: dict[str, Any], made: Made) -> dict[str, Any]:
    url, expires = links.link_make(file_id=made.stored.id)
    result = {
        "type": params["type"],
        "format": params["format"],
        "rows": made.rows,
        "file": str(made.stored.id),
        "name": made.stored.original_name,
        "bytes": made.stored.size,
        "content_type": made.stored.content_type,
        "url": url,
        "url_expires_at": expires.isoformat().replace("+00:00", "Z"),
        **made.summary,
    }
    if params["type"] == "job_stats":
        result.update(start=params["start"], end=params["end"], all_users=params["all_users"])
    return result
