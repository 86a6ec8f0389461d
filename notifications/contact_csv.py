"""Reading contacts from a CSV file: the whole-file pre-check (encoding, NUL bytes, line
length), header mapping and row validation. Used by the csv_import kind
(jobs/kinds/csv_import.py); writing is in notifications/contact_writers.py."""

import codecs
import csv
import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from notifications.contact_writers import COLUMNS

FIELDS = COLUMNS[:5]  # email, first_name, last_name, phone, country
LIMITS = {"email": 254, "first_name": 150, "last_name": 150, "phone": 50, "country": 2}
ALIASES = {
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "first_name": "first_name",
    "firstname": "first_name",
    "given_name": "first_name",
    "last_name": "last_name",
    "lastname": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "phone": "phone",
    "phone_number": "phone",
    "telephone": "phone",
    "mobile": "phone",
    "country": "country",
    "country_code": "country",
}
TARGETS = (*FIELDS, "attributes", "ignore")
EMAIL_RE = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
PHONE_RE = re.compile(r"[0-9+()./ x-]*")
PHONE_RULE = "a phone number has only digits, spaces and + ( ) - . / x"
COUNTRY_RULE = "not a two-letter country code"
COUNTRY_RE = re.compile(r"[A-Z]{2}")


class CsvImportError(Exception):
    """The file cannot be imported as a whole (encoding, header); the job fails at once."""


class Rejections(Protocol):
    def add(self, line: int, column: str, message: str, value: str = "") -> None: ...


def _normal(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


@dataclass
class ImportStats:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0

    def message(self) -> str:
        return (
            f"{self.rows} rows: {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.duplicates} duplicates, {self.rejected} rejected"
        )


@dataclass
class Mapping:
    header: list[str]
    email: int
    others: list[tuple[str, int]]  # (field, column index) besides email
    attributes: list[tuple[str, int]]  # (key, column index)
    required: list[str]
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        present = [name for name, _ in self.others]
        return [*present, "attributes"] if self.attributes else present


def csv_precheck(fp: Any, *, max_line: int) -> int:
    """Stream the file once: UTF-8 throughout, no NUL byte, no over-long line. Returns the
    number of lines."""
    utf8 = codecs.getincrementaldecoder("utf-8")()
    lines, since_newline, first = 0, 0, True
    while chunk := fp.read(max_line):
        if first and chunk.startswith(codecs.BOM_UTF8):
            chunk = chunk[3:]
        first = False
        where = chunk.find(b"\x00")
        if where >= 0:
            line = lines + chunk.count(b"\n", 0, where) + 1
            raise CsvImportError(
                f"Line {line} contains a NUL byte: this is not a text CSV file. "
                "Export it again as CSV (UTF-8)."
            )
        try:
            utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            line = lines + chunk.count(b"\n", 0, max(exc.start, 0)) + 1
            raise CsvImportError(
                f"Line {line} is not valid UTF-8 (byte 0x{chunk[exc.start]:02x}). Only UTF-8 "
                "files (with or without a BOM) are imported; nothing was imported. Save the "
                "file as 'CSV UTF-8' and upload it again."
            ) from exc
        first_nl, last_nl = chunk.find(b"\n"), chunk.rfind(b"\n")
        longest = since_newline + (len(chunk) if first_nl < 0 else first_nl)
        if longest > max_line:
            raise CsvImportError(
                f"Line {lines + 1} is longer than {max_line} bytes; nothing was imported. "
                "Lines (and fields) of an imported CSV are limited to that size."
            )
        since_newline = longest if first_nl < 0 else len(chunk) - last_nl - 1
        lines += chunk.count(b"\n")
    if since_newline:
        lines += 1
    try:
        utf8.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise CsvImportError(f"Line {lines} ends inside a UTF-8 character.") from exc
    return lines


def header_map(header: list[str], *, column_map: dict[str, str], required: list[str]) -> Mapping:
    custom = {_normal(key): target for key, target in column_map.items()}
    by_field: dict[str, int] = {}
    attributes, columns = [], {}
    for index, name in enumerate(header):
        key = _normal(name)
        target = custom.get(key) or ALIASES.get(key) or "attributes"
        label = name.strip() or f"column_{index + 1}"
        if target == "ignore":
            continue
        if target == "attributes":
            attributes.append((label, index))
            columns[label] = f"attributes.{label}"
            continue
        if target in by_field:
            raise CsvImportError(
                f"Columns {header[by_field[target]]!r} and {name!r} both map to {target}; "
                "keep one, or map the other elsewhere with column_map."
            )
        by_field[target] = index
        columns[label] = target
    missing = [name for name in required if name not in by_field]
    if missing:
        expected = ", ".join(f"{name} (required)" if name in required else name for name in FIELDS)
        raise CsvImportError(
            f"The header has no column for {', '.join(missing)}. Expected headers: {expected}; "
            f"other columns go to attributes, and column_map renames headers. "
            f"Found: {', '.join(repr(h) for h in header[:50])}."
        )
    others = [(name, by_field[name]) for name in FIELDS[1:] if name in by_field]
    return Mapping(header, by_field["email"], others, attributes, required, columns)


def _email_ok(email: str) -> bool:
    if len(email) <= LIMITS["email"] and EMAIL_RE.fullmatch(email):
        return True
    try:
        validate_email(email)  # slower, but accepts what the fast pattern misses (IDN)
    except ValidationError:
        return False
    return len(email) <= LIMITS["email"]


# The fast check: one pattern over a row's validated fields joined by a separator, for
# rows that need no cleaning (no surrounding spaces, an ASCII email, an upper-case
# country). It accepts only rows the field-by-field checks below accept, with the same
# values; anything else (a bad row, or a good one that needs cleaning) takes those checks.
# Possessive quantifiers and look-arounds instead of EMAIL_RE's nested groups: the
# pattern never backtracks.
_SEPARATOR = "\x1f"  # no field pattern below matches it
_LOCAL = "[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]++"
_FAST = {
    # EMAIL_RE with upper case allowed (lower() is applied after): the same labels of 1
    # to 63 characters that neither start nor end with a dash, the same top-level domain.
    "email": (
        "(?=[^{sep}]{{1,{limit}}}+(?:{sep}|\\Z))"
        + _LOCAL
        + "(?:\\."
        + _LOCAL
        + ")*+@(?:(?!-)[A-Za-z0-9-]{{1,63}}+(?<!-)\\.)++[A-Za-z]{{2,63}}+"
    ),
    "first_name": "(?!\\s)[^{sep}]{{1,{limit}}}+(?<!\\s)",
    "last_name": "(?!\\s)[^{sep}]{{1,{limit}}}+(?<!\\s)",
    "phone": "(?! )[0-9+()./ x-]{{1,{limit}}}+(?<! )",
    "country": "[A-Z]{{2}}",
}


@dataclass(frozen=True)
class _FastCheck:
    pattern: re.Pattern
    pick: Callable[[list[str]], Any]  # the validated fields of a row, email first
    slots: Callable[[tuple[str, ...]], Any]  # those fields laid out as the row tuple


def _fast_check(mapping: Mapping) -> _FastCheck:
    def part_for(name: str) -> str:
        return _FAST[name].format(sep=_SEPARATOR, limit=LIMITS[name])

    parts = [part_for("email")]
    for name, _ in mapping.others:
        part = part_for(name)
        parts.append(part if name in mapping.required else f"(?:{part})?")
    indices = [mapping.email, *(index for _, index in mapping.others)]
    pick = operator.itemgetter(*indices) if len(indices) > 1 else lambda row: (row[indices[0]],)
    # Slot i of the row tuple (first_name … country) from the picked fields, or "".
    present = {name: place for place, (name, _) in enumerate(mapping.others, 1)}
    empty = len(indices)
    slots = operator.itemgetter(*(present.get(name, empty) for name in FIELDS[1:]))
    return _FastCheck(re.compile(_SEPARATOR.join(parts)), pick, slots)


@dataclass
class _Broken:
    """A record the CSV parser gave up on (an unmatched quote, a field over the limit).
    The lines right after it that do not parse into a full row are its remains (the rest
    of an over-long quoted field): they are reported with it as one rejected record."""

    start: int
    end: int
    error: str

    def report(self, report: Rejections) -> None:
        where = f"lines {self.start}-{self.end}" if self.end > self.start else f"line {self.start}"
        report.add(
            self.start,
            "",
            f"not valid CSV ({self.error}); {where} rejected as one record. "
            "Look for an unmatched quote or a field over the size limit.",
        )


def _row_checked(
    row: list[str], email_at: int, checks: list, required: set[str], header: list[str]
) -> tuple[str, list[str], tuple[str, str, str] | None]:
    """A row's email and field values, cleaned and checked one by one: (email, values,
    None), or the first problem as (column, message, value)."""
    email = row[email_at].strip().lower()
    if not email:
        return email, [], (header[email_at], "email is required", "")
    if not _email_ok(email):
        return email, [], (header[email_at], "not a valid email address", email)
    values = ["", "", "", ""]
    for slot, index, limit, name in checks:
        value = row[index].strip()
        if value:
            if len(value) > limit:
                return email, values, (header[index], f"longer than {limit} characters", value)
            if name == "country":
                value = value.upper()
                if not COUNTRY_RE.fullmatch(value):
                    return email, values, (header[index], COUNTRY_RULE, value)
            elif name == "phone" and not PHONE_RE.fullmatch(value):
                return email, values, (header[index], PHONE_RULE, value)
            values[slot] = value
        elif name in required:
            return email, values, (header[index], f"{name} is required", "")
    return email, values, None


def batch_sizes(batch_rows: int) -> Iterator[int]:
    """The rows of each batch in turn: an eighth of `batch_rows` first, doubling up to it.
    A small first batch gets the writer onto the database while the parser goes on, so a
    small file is not parsed whole and then written whole, one after the other."""
    size = max(1, batch_rows // 8)
    while True:
        yield size
        size = min(size * 2, batch_rows)


def rows_validated(
    reader: Any,
    mapping: Mapping,
    report: Rejections,
    stats: ImportStats,
    batch_rows: int,
    readline: Callable[[], str] | None = None,
) -> Iterator[list[tuple[str, ...]]]:
    """Batches of valid rows (one tuple per email, the last one wins), in file order, of
    `batch_sizes(batch_rows)` rows each (the last one fewer). `readline` reads the
    reader's source directly (to step over an over-long field)."""
    quotechar = reader.dialect.quotechar
    width, header = len(mapping.header), mapping.header
    email_at, others, attributes = mapping.email, mapping.others, mapping.attributes
    required = set(mapping.required) - {"email"}
    # (slot in the row tuple, column index, length limit, field) per mapped column.
    checks = [(FIELDS.index(name) - 1, index, LIMITS[name], name) for name, index in others]
    check = _fast_check(mapping)
    fast, pick, slots, separator = check.pattern.fullmatch, check.pick, check.slots, _SEPARATOR
    # JSON of the attributes, built from pre-encoded keys and C-encoded string values.
    encode = json.encoder.encode_basestring
    keys = {name: encode(name) + ":" for name, _ in attributes}
    # One extra column (a common file) skips the list of pairs.
    single, single_key = (
        (attributes[0][1], keys[attributes[0][0]]) if len(attributes) == 1 else (None, "")
    )
    sizes = batch_sizes(batch_rows)
    size = next(sizes)
    batch: dict[str, tuple[str, ...]] = {}
    previous = reader.line_num
    broken: _Broken | None = None
    while True:
        try:
            for row in reader:
                line, previous = previous + 1, reader.line_num
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # a blank line is not a row
                    if broken is not None:
                        broken.end = previous  # still the remains of the broken record
                        continue
                    stats.rows += 1
                    stats.rejected += 1
                    report.add(line, "", f"{len(row)} fields; the header has {width}")
                    continue
                if broken is not None:
                    broken.report(report)
                    broken = None
                stats.rows += 1
                picked = pick(row)
                if fast(separator.join(picked)):
                    email, values = picked[0].lower(), slots((*picked, ""))
                else:
                    email, values, problem = _row_checked(row, email_at, checks, required, header)
                    if problem is not None:
                        stats.rejected += 1
                        report.add(line, *problem)
                        continue
                if single is not None:
                    value = row[single]
                    extra = "{" + single_key + encode(value) + "}" if value else "{}"
                elif attributes:
                    pairs = [keys[n] + encode(row[i]) for n, i in attributes if row[i]]
                    extra = "{" + ",".join(pairs) + "}" if pairs else "{}"
                else:
                    extra = "{}"
                if email in batch:
                    stats.duplicates += 1
                batch[email] = (email, *values, extra)
                if len(batch) >= size:
                    yield list(batch.values())
                    batch, size = {}, next(sizes)
            break
        except csv.Error as exc:
            if broken is not None:
                broken.report(report)
            broken = _Broken(previous + 1, reader.line_num, str(exc))
            previous = reader.line_num
            if "field limit" in str(exc) and readline is not None:
                # Lines are shorter than the field limit, so the parser was inside a quoted
                # field: skip to the line that closes it (an odd number of quotes, since
                # escaped quotes come in pairs) and go on after it.
                while line_text := readline():
                    previous += 1
                    if line_text.count(quotechar) % 2:
                        break
                broken.end = previous
            stats.rows += 1
            stats.rejected += 1
    if broken is not None:
        broken.report(report)
    if batch:
        yield list(batch.values())
