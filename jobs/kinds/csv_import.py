"""`csv_import`: import contacts (notifications.Contact) from an uploaded CSV file.

Params: `upload` (a CSV upload id of the submitter), `column_map` (header -> field, for
headers the built-in names do not cover; a field is one of email, first_name, last_name,
phone, country, or `attributes` / `ignore`), `required` (fields a row must have; email
always), `delimiter`.

How a file is read:
1. A first streaming pass checks the whole file is UTF-8 (with or without a BOM), has no
   NUL byte and no line over OFFLOAD_CSV_MAX_LINE_BYTES; otherwise the job fails at once,
   naming the line, and nothing is written. It also counts lines: the progress total is
   that estimate until the end, when it becomes the exact number of rows.
2. Headers are matched case-insensitively (spaces and dashes read as underscores) against
   the built-in names and `column_map`; a missing required header fails the job at once
   with the list of expected headers. Columns that map to no field go to `attributes`.
3. Rows stream through validation (email syntax, lengths, required fields, country code,
   phone characters); invalid rows go to an error report CSV (line, column, message,
   value) linked from the result, and do not fail the job. A CSV syntax error (an
   unmatched quote, a field over the limit) rejects the record where it starts.
4. Valid rows are written in batches of OFFLOAD_CSV_BATCH_ROWS (the first ones smaller:
   an eighth of it, doubling), one transaction each, as an upsert on the email
   (lower-cased), so running the same file again changes nothing and an interrupted
   import can be run again safely. Within a file the last row for an email wins; earlier
   ones are counted as duplicates.

Counts: rows = inserted + updated + unchanged + duplicates + rejected (blank lines are not
rows). Progress is written per batch; a cancel stops at the next batch boundary, keeps
what was committed and records the counts so far in the cancelled job's result.
"""

import csv
import io
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from rest_framework import serializers

from jobs import lifecycle, uploads
from jobs.errors import JobCancelled, NotFound
from jobs.models import FilePurpose
from jobs.registry import job_kind
from jobs.runtime import JobRun
from notifications.contact_csv import (
    FIELDS,
    TARGETS,
    CsvImportError,
    ImportStats,
    Mapping,
    csv_precheck,
    header_map,
    rows_validated,
)
from notifications.contact_writers import WritePipeline


class CsvImportParams(serializers.Serializer):
    upload = serializers.UUIDField(help_text="A CSV upload id.")
    column_map = serializers.DictField(
        child=serializers.ChoiceField(choices=TARGETS), required=False, default=dict
    )
    required = serializers.ListField(
        child=serializers.ChoiceField(choices=FIELDS), required=False, default=["email"]
    )
    delimiter = serializers.ChoiceField(choices=[",", ";", "\t", "|"], default=",")

    def validate_column_map(self, value: dict) -> dict:
        if len(value) > 200 or any(len(key) > 200 for key in value):
            raise serializers.ValidationError("at most 200 headers of up to 200 characters")
        return value

    def validate_upload(self, value: Any) -> Any:
        upload = uploads.upload_get(user=self.context.get("owner"), upload_id=value)
        if upload.content_type != "text/csv":
            raise serializers.ValidationError(
                f"upload {upload.id} is {upload.content_type}, not a CSV file"
            )
        return value

    def validate_required(self, value: list[str]) -> list[str]:
        return sorted({"email", *value}, key=FIELDS.index)


class RejectReport:
    """Rejected rows, streamed to a temporary file; stored only if there are any."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115
        self.text = io.TextIOWrapper(self.file, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text)
        self.writer.writerow(["line", "column", "message", "value"])
        self.rows = 0

    def add(self, line: int, column: str, message: str, value: str = "") -> None:
        self.rows += 1
        self.writer.writerow([line, column, message, value[:100]])

    def store(self, *, job_id: Any, owner_id: int | None) -> dict[str, Any] | None:
        if not self.rows:
            return None
        self.text.flush()
        size = self.file.tell()
        self.file.seek(0)
        stored = uploads.output_save(
            name=f"imports/{job_id}/rejected-rows.csv",
            content=File(self.file, name="rejected-rows.csv"),
            owner_id=owner_id,
            job_id=job_id,
            purpose=FilePurpose.IMPORT_REPORT,
            content_type="text/csv",
        )
        return {"url": uploads.file_url(stored), "file": str(stored.id), "bytes": size}

    def mark(self, stats: ImportStats) -> "_Mark":
        self.text.flush()
        return _Mark(stats.rows, stats.rejected, stats.duplicates, self.rows, self.file.tell())

    def truncate(self, mark: "_Mark") -> None:
        """Forget the rows rejected after `mark` (they belong to batches never written)."""
        self.text.flush()
        self.file.truncate(mark.report_at)
        self.file.seek(mark.report_at)
        self.rows = mark.report_rows

    def close(self) -> None:
        self.text.close()


uploads.job_upload_claimed("csv_import")


@dataclass(frozen=True)
class _Mark:
    """The parser's counts at the end of one batch: what is committed with it."""

    rows: int
    rejected: int
    duplicates: int
    report_rows: int
    report_at: int


def contacts_import(
    *, job: JobRun, upload_name: str, owner_id: int, params: dict[str, Any]
) -> dict[str, Any]:
    max_line = settings.OFFLOAD_CSV_MAX_LINE_BYTES
    csv.field_size_limit(max_line)
    parsed = ImportStats()  # what the parser has seen
    written = ImportStats()  # what the database has committed (the writer's counts)
    with default_storage.open(upload_name, "rb") as fp:
        lines = csv_precheck(fp, max_line=max_line)
        fp.seek(0)
        text = io.TextIOWrapper(fp, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=params["delimiter"], strict=True)
        try:
            header = next(reader)
        except (StopIteration, csv.Error) as exc:
            raise CsvImportError(f"The file has no readable header line ({exc}).") from exc
        mapping = header_map(header, column_map=params["column_map"], required=params["required"])
        estimate = max(lines - reader.line_num, 0)
        report = RejectReport()
        committed = report.mark(parsed)

        def absorb(done: list) -> None:
            nonlocal committed
            for counts, mark in done:
                for name, value in asdict(counts).items():
                    setattr(written, name, getattr(written, name) + value)
                written.batches += 1
                committed = mark

        try:
            with WritePipeline(fields=mapping.fields) as pipeline:
                batches = rows_validated(
                    reader, mapping, report, parsed, settings.OFFLOAD_CSV_BATCH_ROWS, text.readline
                )
                try:
                    for batch in batches:
                        absorb(pipeline.submit(batch, report.mark(parsed)))
                        now = _combined(committed, written)
                        job.progress(now.rows, max(estimate, now.rows), now.message())
                    absorb(pipeline.finish())
                except JobCancelled:
                    absorb(pipeline.abandon())
                    report.truncate(committed)
                    now = _combined(committed, written)
                    result = _result(params, mapping, now, report, job.id, owner_id, cancelled=True)
                    lifecycle.job_cancelled_result_set(job_id=job.id, result=result)
                    raise
        except BaseException:
            report.close()
            raise
        finally:
            text.detach()
        final = _combined(report.mark(parsed), written)
        result = _result(params, mapping, final, report, job.id, owner_id)
    job.progress(final.rows, final.rows, final.message())
    return result


def _combined(mark: _Mark, written: ImportStats) -> ImportStats:
    return ImportStats(
        rows=mark.rows,
        inserted=written.inserted,
        updated=written.updated,
        unchanged=written.unchanged,
        duplicates=mark.duplicates + written.duplicates,
        rejected=mark.rejected,
        batches=written.batches,
    )


def _result(
    params: dict[str, Any],
    mapping: Mapping,
    stats: ImportStats,
    report: RejectReport,
    job_id: Any,
    owner_id: int,
    cancelled: bool = False,
) -> dict[str, Any]:
    try:
        error_report = report.store(job_id=job_id, owner_id=owner_id)
    finally:
        report.close()
    result = {
        "upload": str(params["upload"]),
        **asdict(stats),
        "columns": mapping.columns,
        "error_report": error_report,
    }
    if cancelled:
        result["cancelled"] = True
    return result


@job_kind(
    "csv_import",
    params=CsvImportParams,
    queue="bulk",
    priority=2,
    concurrency_key="owner",
    concurrency_limit=1,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 60,
)
def csv_import(job: JobRun) -> dict:
    """Import contacts from an uploaded CSV file (an upsert on email, in batches)."""
    owner = uploads.job_owner(job)
    if owner.upload_name is None:
        raise NotFound(f"Upload {job.params['upload']} is gone or is not the job owner's.")
    return contacts_import(
        job=job, upload_name=owner.upload_name, owner_id=owner.owner_id, params=job.params
    )
