"""Batched contact upserts for imports: one batch is one transaction.

`contact_writer(fields=…)` returns the writer for the database in use:
- PostgreSQL: COPY the batch into a temporary table, then one
  `INSERT … SELECT … ON CONFLICT (email) DO UPDATE … WHERE <the row differs>` whose
  `RETURNING (xmax = 0)` tells inserted rows from updated ones; rows that matched but did
  not differ are unchanged.
- SQLite (the quickstart): read the batch's existing rows, compare in Python, then one
  batched `INSERT … ON CONFLICT (email) DO UPDATE` of the new and changed rows.

Only the columns the file has (`fields`) are written on update: a file without a phone
column leaves phones alone. `attributes` are merged into the stored ones. Emails already
written earlier in the same import (a duplicate later in the file) are recognised through
a per-import temporary table of seen emails, so memory stays flat however large the file:
the later row wins and is counted as a duplicate instead of updated/unchanged.
"""

import json
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import connection, transaction
from django.utils import timezone

from notifications.models import Contact

# Row layout handed to a writer: every column, absent ones empty.
COLUMNS = ("email", "first_name", "last_name", "phone", "country", "attributes")
_TABLE = Contact._meta.db_table
_BATCH = "offload_import_batch"
_SEEN = "offload_import_seen"


@dataclass
class BatchCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class EncodedBatch:
    data: bytes
    count: int


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class ContactWriter(Protocol):
    def open(self) -> None: ...
    def write(self, rows: Sequence[tuple[str, ...]]) -> BatchCounts: ...
    def close(self) -> None: ...


def contact_writer(*, fields: Sequence[str]) -> ContactWriter:
    """`fields`: the columns besides email that the file provides (attributes included
    when the file has extra columns)."""
    if connection.vendor == "postgresql":
        return PostgresContactWriter(fields)
    return SqliteContactWriter(fields)


class PostgresContactWriter:
    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = [name for name in COLUMNS[1:] if name in fields]
        plain = [name for name in self.fields if name != "attributes"]
        sets = [f"{name} = EXCLUDED.{name}" for name in plain]
        differs = []
        if plain:
            old = ", ".join(f"c.{name}" for name in plain)
            new = ", ".join(f"EXCLUDED.{name}" for name in plain)
            differs.append(f"ROW({old}) IS DISTINCT FROM ROW({new})")
        if "attributes" in self.fields:
            sets.append("attributes = c.attributes || EXCLUDED.attributes")
            differs.append("NOT c.attributes @> EXCLUDED.attributes")
        if sets:
            sets.append("updated_at = EXCLUDED.updated_at")
            conflict = f"DO UPDATE SET {', '.join(sets)} WHERE {' OR '.join(differs)}"
        else:
            conflict = "DO NOTHING"
        columns = ", ".join(COLUMNS)
        # Identifiers come from COLUMNS, never from the file; values travel by COPY.
        self.upsert = f"""
            WITH fresh AS (
                INSERT INTO {_SEEN} (hash) SELECT hashtextextended(email, 0) FROM {_BATCH}
                ON CONFLICT DO NOTHING RETURNING hash
            ), up AS (
                INSERT INTO {_TABLE} AS c ({columns}, created_at, updated_at)
                SELECT {columns}, now(), now() FROM {_BATCH} ORDER BY email
                ON CONFLICT (email) {conflict}
                RETURNING hashtextextended(c.email, 0) AS hash, (c.xmax = 0) AS inserted
            )
            SELECT (SELECT count(*) FROM fresh),
                   count(*) FILTER (WHERE up.inserted),
                   count(*) FILTER (WHERE NOT up.inserted AND fresh.hash IS NOT NULL)
            FROM up LEFT JOIN fresh USING (hash)
        """  # noqa: S608
        self.copy = f"COPY {_BATCH} ({', '.join(('email', *self.fields))}) FROM STDIN"
        self.width = 1 + len(self.fields)
        self.positions = [COLUMNS.index(name) for name in ("email", *self.fields)]

    def open(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {_BATCH}, {_SEEN}")
            # Temporary tables are not WAL-logged; the batch table empties at each commit.
            cursor.execute(
                f"CREATE TEMPORARY TABLE {_BATCH} (email text NOT NULL, "
                "first_name text NOT NULL DEFAULT '', last_name text NOT NULL DEFAULT '', "
                "phone text NOT NULL DEFAULT '', country text NOT NULL DEFAULT '', "
                "attributes jsonb NOT NULL DEFAULT '{}') ON COMMIT DELETE ROWS"
            )
            # Emails seen so far, as 64-bit hashes: small keys keep this index cheap, and a
            # collision (about 1 in 10^7 for a 10-million-row file) only miscounts one row.
            cursor.execute(f"CREATE TEMPORARY TABLE {_SEEN} (hash bigint PRIMARY KEY)")

    def encode(self, rows: Sequence[tuple[str, ...]]) -> "EncodedBatch":
        """The batch in COPY's text format (so a pipeline can do this on the parsing
        thread, away from the one waiting on the database)."""
        positions = self.positions
        whole = len(positions) == len(COLUMNS)
        tabs = len(positions) - 1
        lines = []
        for row in rows:
            fields = row if whole else [row[i] for i in positions]
            line = "\t".join(fields)
            if line.count("\t") != tabs or "\\" in line or "\n" in line or "\r" in line:
                line = "\t".join(field.translate(_COPY_ESCAPES) for field in fields)
            lines.append(line)
        lines.append("")
        return EncodedBatch("\n".join(lines).encode(), len(rows))

    def write(self, rows: "Sequence[tuple[str, ...]] | EncodedBatch") -> BatchCounts:
        batch = rows if isinstance(rows, EncodedBatch) else self.encode(rows)
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(self.copy) as copy:
                copy.write(batch.data)
            cursor.execute(self.upsert)
            fresh, inserted, updated = cursor.fetchone()
        duplicates = batch.count - fresh
        return BatchCounts(
            inserted=inserted,
            updated=updated,
            unchanged=batch.count - inserted - updated - duplicates,
            duplicates=duplicates,
        )

    def close(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {_BATCH}, {_SEEN}")


class SqliteContactWriter:
    CHUNK = 500  # bound on SQL variables per statement

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = [name for name in COLUMNS[1:] if name in fields]
        self.compared = [COLUMNS.index(name) for name in self.fields if name != "attributes"]
        sets = [f"{name} = excluded.{name}" for name in self.fields if name != "attributes"]
        if "attributes" in self.fields:
            sets.append(f"attributes = json_patch({_TABLE}.attributes, excluded.attributes)")
        sets.append("updated_at = excluded.updated_at")
        marks = ", ".join(["%s"] * (len(COLUMNS) + 2))
        self.upsert = (
            f"INSERT INTO {_TABLE} ({', '.join(COLUMNS)}, created_at, updated_at) "  # noqa: S608
            f"VALUES ({marks}) ON CONFLICT (email) DO UPDATE SET {', '.join(sets)}"
        )

    def open(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS temp.{_SEEN}")
            cursor.execute(f"CREATE TEMPORARY TABLE {_SEEN} (email TEXT PRIMARY KEY)")

    def _lookup(self, cursor: object, sql: str, emails: list[str]) -> list[tuple]:
        found = []
        for start in range(0, len(emails), self.CHUNK):
            chunk = emails[start : start + self.CHUNK]
            cursor.execute(sql.format(marks=", ".join(["%s"] * len(chunk))), chunk)
            found.extend(cursor.fetchall())
        return found

    def write(self, rows: Sequence[tuple[str, ...]]) -> BatchCounts:
        counts = BatchCounts()
        emails = [row[0] for row in rows]
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with transaction.atomic(), connection.cursor() as cursor:
            seen = {
                email
                for (email,) in self._lookup(
                    cursor,
                    f"SELECT email FROM {_SEEN} WHERE email IN ({{marks}})",  # noqa: S608
                    emails,
                )
            }
            existing = {
                found[0]: found
                for found in self._lookup(
                    cursor,
                    f"SELECT {', '.join(COLUMNS)} FROM {_TABLE} WHERE email IN ({{marks}})",  # noqa: S608
                    emails,
                )
            }
            changed = []
            for row in rows:
                old = existing.get(row[0])
                if old is None:
                    counts.inserted += 1
                    changed.append((*row, now, now))
                    continue
                differs = any(old[i] != row[i] for i in self.compared)
                if "attributes" in self.fields:
                    stored = json.loads(old[5] or "{}")
                    differs = differs or {**stored, **json.loads(row[5])} != stored
                if row[0] in seen:
                    counts.duplicates += 1
                elif differs:
                    counts.updated += 1
                else:
                    counts.unchanged += 1
                if differs:
                    changed.append((*row, now, now))
            if changed:
                cursor.executemany(self.upsert, changed)
            cursor.executemany(
                f"INSERT OR IGNORE INTO {_SEEN} (email) VALUES (%s)",  # noqa: S608
                [(email,) for email in emails],
            )
        return counts

    def close(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS temp.{_SEEN}")


class WritePipeline:
    """Writes batches through a contact writer on a second thread with its own database
    connection (PostgreSQL), so the next batch is parsed while the database works on this
    one; at most `depth` parsed batches wait, so memory stays bounded. On SQLite (one
    writer at a time) batches are written inline.

    Each batch travels with a caller's `mark`; `submit`, `finish` and `abandon` return the
    (counts, mark) of the batches committed since the last call, in order."""

    def __init__(self, *, fields: Sequence[str], depth: int = 2) -> None:
        self.fields = fields
        self.threaded = connection.vendor == "postgresql"
        self.todo: queue.Queue = queue.Queue(maxsize=depth)
        self.done: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.writer: ContactWriter | None = None
        self.encoder = PostgresContactWriter(fields) if self.threaded else None

    def __enter__(self) -> "WritePipeline":
        if self.threaded:
            self.thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
            self.thread.start()
        else:
            self.writer = contact_writer(fields=self.fields)
            self.writer.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.thread is not None:
            self._stop(drop=True, raise_errors=False)
        elif self.writer is not None:
            self.writer.close()

    def _run(self) -> None:
        try:
            writer = contact_writer(fields=self.fields)
            writer.open()
            try:
                while (item := self.todo.get()) is not None:
                    if not self.stopping.is_set():
                        rows, mark = item
                        self.done.put((writer.write(rows), mark))
            finally:
                writer.close()
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self.done.put(exc)
            while self.todo.get() is not None:
                pass
        finally:
            connection.close()

    def _collect(self) -> list[tuple[BatchCounts, Any]]:
        items = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return items
            if isinstance(item, BaseException):
                raise item
            items.append(item)

    def submit(self, rows: Sequence[tuple[str, ...]], mark: Any) -> list[tuple[BatchCounts, Any]]:
        if self.thread is None:
            return [(self.writer.write(rows), mark)]
        encoded = self.encoder.encode(rows)
        while True:
            try:
                self.todo.put((encoded, mark), timeout=0.5)
                break
            except queue.Full:
                self._raise_if_failed()
        return self._collect()

    def _raise_if_failed(self) -> None:
        if self.thread is not None and not self.thread.is_alive():
            self._collect()  # raises the writer's error, if any
            raise RuntimeError("the import writer thread stopped unexpectedly")

    def _stop(self, *, drop: bool, raise_errors: bool = True) -> list[tuple[BatchCounts, Any]]:
        if drop:
            self.stopping.set()
        while self.thread.is_alive():
            try:
                self.todo.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self.thread.join()
        items = []
        while not self.done.empty():
            item = self.done.get_nowait()
            if isinstance(item, BaseException):
                if raise_errors:
                    self.thread = None
                    raise item
                continue
            items.append(item)
        self.thread = None
        return items

    def finish(self) -> list[tuple[BatchCounts, Any]]:
        """Wait for every submitted batch to be committed."""
        return [] if self.thread is None else self._stop(drop=False)

    def abandon(self) -> list[tuple[BatchCounts, Any]]:
        """Drop the batches not yet started; wait for the one being written."""
        return [] if self.thread is None else self._stop(drop=True)
