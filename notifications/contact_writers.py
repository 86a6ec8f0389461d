"""Batched contact upserts for imports: one batch is one transaction.

`contact_writer(fields=…)` returns the writer for the database in use:
- PostgreSQL: a direct COPY into the contacts table while batches are all new, otherwise
  a COPY into a temporary table and one statement that probes each email once, inserts
  the new contacts, upserts those that differ and counts the rest (PostgresContactWriter
  tells how, and how duplicates across batches are recognised).
- SQLite (the quickstart): read the batch's existing rows, compare in Python, then one
  batched `INSERT … ON CONFLICT (email) DO UPDATE` of the new and changed rows.

Only the columns the file has (`fields`) are written on update: a file without a phone
column leaves phones alone. `attributes` are merged into the stored ones. An email
already written earlier in the same import (a duplicate later in the file) is recognised
without keeping the file's emails in memory, so memory stays flat however large the
file: the later row wins and is counted as a duplicate instead of updated/unchanged.
"""

import json
import queue
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from notifications.models import Contact

# Row layout handed to a writer: every column, absent ones empty.
COLUMNS = ("email", "first_name", "last_name", "phone", "country", "attributes")
_TABLE = Contact._meta.db_table
_BATCH = "offload_import_batch"
_SEEN = "offload_import_seen"
_STAMPS = "offload_import_stamps"


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
    first: str  # the first email, in the batch's order


# The PostgreSQL writer's tables, all temporary (not WAL-logged): the batch (emptied at
# each commit); the emails matched but left unchanged so far, as 64-bit hashes (small keys
# keep the index cheap; a collision, about 1 in 10^7 for a 10-million-row file, only
# miscounts one row); the statement times of the batches written.
_OPEN = f"""
    DROP TABLE IF EXISTS pg_temp.{_BATCH}, pg_temp.{_SEEN}, pg_temp.{_STAMPS};
    CREATE TEMPORARY TABLE {_BATCH} (
        email text NOT NULL, first_name text NOT NULL, last_name text NOT NULL,
        phone text NOT NULL, country text NOT NULL, attributes jsonb NOT NULL
    ) ON COMMIT DELETE ROWS;
    CREATE TEMPORARY TABLE {_SEEN} (hash bigint PRIMARY KEY);
    CREATE TEMPORARY TABLE {_STAMPS} (stamp timestamptz PRIMARY KEY);
"""
# What a concurrent writer of the same contacts can cause; the batch is written again.
_RACES = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected)
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
    """A batch is one transaction, written one of two ways:
    - the direct COPY into the contacts table, when the previous batch found none of its
      emails there (a first import, the new tail of a file): all inserted, at COPY's
      speed. The first email that exists aborts it (a unique violation, which PostgreSQL
      logs); it is rolled back and the batch takes the upsert;
    - the upsert: COPY into a temporary table, then one statement that looks every email
      up once (an index probe per row) and from what it finds inserts the new contacts
      (a plain INSERT, cheaper than ON CONFLICT's speculative insertion), upserts those
      that differ and sorts the rest into unchanged and duplicates.

    Duplicates across batches: every contact a batch writes gets the batch's statement
    time as `updated_at` (the column's database default, one value per statement), and
    the run keeps those times, one per batch, in a temporary table: a later row whose
    contact carries one of them is a duplicate. Contacts the run matched without writing
    (unchanged) carry none; their emails go to a temporary table of hashes. A first
    import keeps no per-row state at all, a re-import one hash per row in PostgreSQL: the
    worker's memory stays flat either way. A contact that someone else writes between
    two rows of the same file (or in the same microsecond as a batch) can be miscounted,
    never lost: the data is always the file's last row.
    """

    ATTEMPTS = 5

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = [name for name in COLUMNS[1:] if name in fields]
        self.direct = False  # the next batch tries the direct COPY
        plain = [name for name in self.fields if name != "attributes"]
        sets, differs = [], []
        if plain:
            old = ", ".join(f"c.{name}" for name in plain)
            new = ", ".join(f"b.{name}" for name in plain)
            differs.append(f"ROW({old}) IS DISTINCT FROM ROW({new})")
            sets += [f"{name} = EXCLUDED.{name}" for name in plain]
        if "attributes" in self.fields:
            differs.append("NOT c.attributes @> b.attributes")
            sets.append("attributes = c.attributes || EXCLUDED.attributes")
        columns = ", ".join(COLUMNS)
        # The contacts that differ are upserted, not updated by id: one deleted since
        # this statement's snapshot is inserted again instead of lost.
        update = (
            f"""INSERT INTO {_TABLE} AS c ({columns})
                SELECT {columns} FROM old WHERE differs
                ON CONFLICT (email) DO UPDATE SET {", ".join(sets)},
                    updated_at = statement_timestamp()"""  # noqa: S608
            if sets
            else "SELECT 1 WHERE false"
        )
        # Identifiers come from COLUMNS, never from the file; values travel by COPY.
        # LIMIT 1 keeps the lookup an index probe per row, whatever the planner would
        # guess about a temporary table without statistics (a hash join would read all
        # of contacts for every batch).
        self.upsert = f"""
            WITH old AS MATERIALIZED (
                SELECT b.*, c.id, c.updated_at IN (SELECT stamp FROM {_STAMPS}) AS ours,
                       c.id IS NOT NULL AND ({" OR ".join(differs) or "false"}) AS differs
                FROM {_BATCH} AS b LEFT JOIN LATERAL (
                    SELECT * FROM {_TABLE} WHERE email = b.email LIMIT 1
                ) AS c ON true
            ), inserted AS (
                INSERT INTO {_TABLE} ({columns})
                SELECT {columns} FROM old WHERE id IS NULL
                RETURNING 1
            ), updated AS ({update}
            ), fresh AS (
                INSERT INTO {_SEEN} (hash)
                SELECT hashtextextended(email, 0) FROM old WHERE id IS NOT NULL AND NOT ours
                ON CONFLICT DO NOTHING RETURNING hash
            ), stamp AS (
                INSERT INTO {_STAMPS} VALUES (statement_timestamp()) ON CONFLICT DO NOTHING
            )
            SELECT (SELECT count(*) FROM inserted),
                   count(*) FILTER (WHERE ours),
                   count(*) FILTER (WHERE id IS NOT NULL AND NOT ours),
                   (SELECT count(*) FROM fresh),
                   count(*) FILTER (
                       WHERE differs AND NOT ours
                       AND hashtextextended(email, 0) IN (SELECT hash FROM fresh)
                   )
            FROM old
        """  # noqa: S608
        self.copy_batch = f"COPY {_BATCH} ({columns}) FROM STDIN"
        self.copy_direct = f"COPY {_TABLE} ({columns}) FROM STDIN"
        # The direct COPY's rows share their updated_at; one of them tells it.
        self.stamp_direct = (
            f"INSERT INTO {_STAMPS} SELECT updated_at FROM {_TABLE} WHERE email = %s "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )

    def open(self) -> None:
        # One request, one transaction: the tables' catalog rows are committed (and
        # flushed) once. The first batch has no previous one to go by and takes the
        # upsert. (Asking whether contacts is empty instead is not cheap: after a mass
        # delete, until vacuum, it reads every dead row.)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_OPEN)

    def encode(self, rows: Sequence[tuple[str, ...]]) -> "EncodedBatch":
        """The batch in COPY's text format, in email order (so a pipeline can do this on
        the parsing thread, away from the one waiting on the database). In email order,
        concurrent imports lock the contacts they share in the same order."""
        rows = sorted(rows)
        text = "\n".join(map("\t".join, rows)) + "\n"
        # One scan of the whole batch for what COPY's text format escapes (a tab, a
        # backslash or a line break inside a value); only then is each value escaped.
        tabs = (len(COLUMNS) - 1) * len(rows)
        if (
            text.count("\t") != tabs
            or text.count("\n") != len(rows)
            or "\\" in text
            or "\r" in text
        ):
            escaped = ("\t".join(field.translate(_COPY_ESCAPES) for field in row) for row in rows)
            text = "\n".join(escaped) + "\n"
        return EncodedBatch(text.encode(), len(rows), rows[0][0] if rows else "")

    def write(self, rows: "Sequence[tuple[str, ...]] | EncodedBatch") -> BatchCounts:
        batch = rows if isinstance(rows, EncodedBatch) else self.encode(rows)
        if not batch.count:
            return BatchCounts()
        if self.direct and self._copy_direct(batch):
            return BatchCounts(inserted=batch.count)
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                counts = self._upsert(batch)
            except (IntegrityError, OperationalError) as exc:
                # A concurrent import inserted one of the new emails, or the two deadlocked:
                # the batch rolled back whole and is written again.
                if attempt == self.ATTEMPTS or not isinstance(exc.__cause__, _RACES):
                    raise
                continue
            # Nothing of this batch was there before: the next one is likely new too.
            self.direct = counts.inserted == batch.count
            return counts
        raise AssertionError("unreachable")

    def _copy_direct(self, batch: "EncodedBatch") -> bool:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                with cursor.cursor.copy(self.copy_direct) as copy:
                    copy.write(batch.data)
                cursor.execute(self.stamp_direct, [batch.first])
        except _RACES:  # raised by psycopg's own copy(); nothing of the batch stays
            self.direct = False
            return False
        return True

    def _upsert(self, batch: "EncodedBatch") -> BatchCounts:
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(self.copy_batch) as copy:
                copy.write(batch.data)
            cursor.execute(self.upsert)
            inserted, ours, matched, fresh, fresh_differ = cursor.fetchone()
        duplicates = ours + matched - fresh
        return BatchCounts(
            inserted=inserted,
            updated=fresh_differ,
            unchanged=batch.count - inserted - fresh_differ - duplicates,
            duplicates=duplicates,
        )

    def close(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DROP TABLE IF EXISTS pg_temp.{_BATCH}, pg_temp.{_SEEN}, pg_temp.{_STAMPS}"
            )


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

    SWITCH_INTERVAL = 0.0002  # seconds; see __enter__

    def __init__(self, *, fields: Sequence[str], depth: int = 2) -> None:
        self.fields = fields
        self.threaded = connection.vendor == "postgresql"
        self.todo: queue.Queue = queue.Queue(maxsize=depth)
        self.done: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.writer: ContactWriter | None = None
        self.encoder = PostgresContactWriter(fields) if self.threaded else None
        self.switch_interval = sys.getswitchinterval()

    def __enter__(self) -> "WritePipeline":
        if self.threaded:
            # The writer wakes several times per batch (each round trip) and each time
            # waits for the parsing thread to hand over the GIL: every 5 ms by default,
            # which made the writer, the slower side, a third slower. Restored on exit.
            sys.setswitchinterval(min(self.switch_interval, self.SWITCH_INTERVAL))
            self.thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
            self.thread.start()
        else:
            self.writer = contact_writer(fields=self.fields)
            self.writer.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.thread is not None:
                self._stop(drop=True, raise_errors=False)
            elif self.writer is not None:
                self.writer.close()
        finally:
            if self.threaded:
                sys.setswitchinterval(self.switch_interval)

    def _run(self) -> None:
        try:
            writer = self.encoder
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
