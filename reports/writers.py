"""Tables to files: CSV and XLSX, streamed row by row with bounded memory.

A report is a list of `Table`s, each with typed columns and an iterable of rows (a
database cursor for exports). Rows are written as they come: nothing holds a whole table.

CSV: one table is a plain CSV with a header row. Several tables (job_stats) are sections,
each introduced by a `# <title>` line and followed by a blank line. Text cells that a
spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
return) are written with a leading `'`, the OWASP advice against CSV injection; so a phone
number `+44 20 …` reads `'+44 20 …` in the file. Numbers, booleans and dates are never
escaped (they are not text). Times are ISO 8601 with microseconds and the offset, in
DJANGO_TIME_ZONE. On PostgreSQL a contacts export is formatted by the server and streamed
with `COPY … TO STDOUT` (`csv_copy_write`): the same cells (a test holds the two paths to
it), lines ending in LF instead of CRLF.

XLSX: XlsxWriter in constant_memory mode (each row is flushed to a temporary file once the
next one starts). Every cell is typed: text as a string cell (never a formula, whatever it
starts with), numbers, booleans and dates (in DJANGO_TIME_ZONE, Excel has no time zones) as
such; a bold, frozen header row. A sheet holds at most 1,048,576 rows, so a longer table
continues on a further sheet with the same header.
"""

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_ROWS = 1_048_576
COLUMN_TYPES = ("text", "int", "float", "bool", "datetime", "date")


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"
    width: float = 14


@dataclass
class Table:
    title: str
    columns: Sequence[Column]
    rows: Iterable[Sequence[Any]]


def cell_escape(value: str) -> str:
    """A text cell a spreadsheet would read as a formula gets a leading apostrophe."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _csv_converters(columns: Sequence[Column]) -> list[Callable[[Any], Any]]:
    tz = ZoneInfo(settings.TIME_ZONE)

    def text(value: Any) -> str:
        if value is None:
            return ""
        return cell_escape(value if isinstance(value, str) else str(value))

    def number(value: Any) -> Any:
        return "" if value is None else value

    def boolean(value: Any) -> str:
        return "" if value is None else ("true" if value else "false")

    def moment(value: datetime | None) -> str:
        return "" if value is None else value.astimezone(tz).isoformat(timespec="microseconds")

    def day(value: date | None) -> str:
        return "" if value is None else value.isoformat()

    by_type = {
        "text": text, "int": number, "float": number, "bool": boolean,
        "datetime": moment, "date": day,
    }  # fmt: skip
    return [by_type[column.type] for column in columns]


def csv_write(tables: Sequence[Table], path: Path, *, on_row: Callable[[int], None]) -> int:
    """Write the tables to `path`; returns the number of data rows. `on_row(n)` is called
    every OFFLOAD_REPORT_CHUNK_ROWS rows (progress, cancellation)."""
    every = settings.OFFLOAD_REPORT_CHUNK_ROWS
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        for index, table in enumerate(tables):
            if len(tables) > 1:
                if index:
                    out.write("\r\n")
                out.write(f"# {table.title}\r\n")
            writer.writerow([cell_escape(column.name) for column in table.columns])
            converters = _csv_converters(table.columns)
            for row in table.rows:
                writer.writerow(
                    [convert(value) for convert, value in zip(converters, row, strict=True)]
                )
                written += 1
                if written % every == 0:
                    on_row(written)
    return written


def csv_copy_write(
    *,
    columns: Sequence[Column],
    select: tuple[str, Sequence[Any]],
    path: Path,
    on_row: Callable[[int], None],
) -> int:
    """PostgreSQL: write one table from `COPY (select) TO STDOUT` (CSV), the cells already
    formatted by the SELECT (see selectors.contacts_csv_select). The server formats and
    quotes; Python only moves blocks, so this runs near the speed of a raw COPY. Lines end
    with LF (COPY's own), fields holding a line break are quoted. Returns the row count;
    `on_row(n)` is called after each block received (n counts line ends so far, an
    estimate when fields hold line breaks).

    The COPY runs on a connection of its own, in autocommit: `on_row` may write (a job's
    progress, which also notices a cancel) on the thread's usual connection while the
    COPY holds this one, and no transaction stays open for the length of the export."""
    sql, params = select
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([cell_escape(c.name) for c in columns])
    seen = 0
    own = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with path.open("wb") as out, own.cursor() as cursor:
            # Times are formatted by the server, in its session time zone: make it ours.
            cursor.execute("SELECT set_config('TimeZone', %s, false)", [settings.TIME_ZONE])
            out.write(header.getvalue().encode())
            with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
                for block in copy:
                    data = bytes(block)
                    out.write(data)
                    seen += data.count(b"\n")
                    on_row(seen)
            return cursor.rowcount
    finally:
        own.close()


def _sheet_name(title: str, part: int) -> str:
    name = "".join(ch for ch in title if ch not in "[]:*?/\\")[:31] or "sheet"
    return name if part == 1 else f"{name[:26]} ({part})"


def xlsx_write(tables: Sequence[Table], path: Path, *, on_row: Callable[[int], None]) -> int:
    """Write each table to its own sheet (more when it is longer than a sheet); returns
    the number of data rows."""
    import xlsxwriter

    every = settings.OFFLOAD_REPORT_CHUNK_ROWS
    tz = ZoneInfo(settings.TIME_ZONE)
    workbook = xlsxwriter.Workbook(
        str(path),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "remove_timezone": True,
        },
    )
    bold = workbook.add_format({"bold": True})
    formats = {
        "datetime": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
        "float": workbook.add_format({"num_format": "0.000"}),
    }
    written = 0
    try:
        for table in tables:
            part, sheet, row_at = 0, None, XLSX_MAX_ROWS
            writers = _xlsx_cell_writers(table.columns, formats, tz)
            for row in table.rows:
                if row_at >= XLSX_MAX_ROWS:
                    part += 1
                    sheet = _xlsx_sheet(workbook, table, part, bold)
                    row_at = 1
                for col, (write, value) in enumerate(zip(writers, row, strict=True)):
                    if value is not None:
                        write(sheet, row_at, col, value)
                row_at += 1
                written += 1
                if written % every == 0:
                    on_row(written)
            if sheet is None:
                _xlsx_sheet(workbook, table, 1, bold)
    finally:
        workbook.close()
    return written


def _xlsx_sheet(workbook: Any, table: Table, part: int, bold: Any) -> Any:
    sheet = workbook.add_worksheet(_sheet_name(table.title, part))
    for col, column in enumerate(table.columns):
        sheet.set_column(col, col, column.width)
    sheet.freeze_panes(1, 0)
    for col, column in enumerate(table.columns):
        sheet.write_string(0, col, column.name, bold)
    return sheet


def _xlsx_cell_writers(
    columns: Sequence[Column], formats: dict[str, Any], tz: ZoneInfo
) -> list[Callable[[Any, int, int, Any], None]]:
    def text(sheet: Any, row: int, col: int, value: Any) -> None:
        sheet.write_string(row, col, value if isinstance(value, str) else str(value))

    def number(sheet: Any, row: int, col: int, value: Any) -> None:
        sheet.write_number(row, col, value)

    def decimal(sheet: Any, row: int, col: int, value: Any) -> None:
        sheet.write_number(row, col, value, formats["float"])

    def boolean(sheet: Any, row: int, col: int, value: Any) -> None:
        sheet.write_boolean(row, col, bool(value))

    def moment(sheet: Any, row: int, col: int, value: datetime) -> None:
        sheet.write_datetime(row, col, value.astimezone(tz), formats["datetime"])

    def day(sheet: Any, row: int, col: int, value: date) -> None:
        sheet.write_datetime(row, col, value, formats["date"])

    by_type = {
        "text": text, "int": number, "float": decimal, "bool": boolean,
        "datetime": moment, "date": day,
    }  # fmt: skip
    return [by_type[column.type] for column in columns]
