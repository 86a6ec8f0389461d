"""Row validation of contact imports: rows that need no cleaning are checked by one
pattern, the others field by field; both must accept, clean and reject exactly alike."""

import csv
import dataclasses
import io
import random
import re

import pytest

from notifications import contact_csv
from notifications.contact_csv import ImportStats, header_map, rows_validated

TRICKY = ["a", "B", " ", "\t", "\u00a0", "é", "\u212a", "\u017f", "1", "+", "(", ".", "x", "-", "@"]
EMAILS = [
    "ann@example.com",
    "Bob.Smith@Mail.Example.ORG",
    "x@y",
    "a@b.c",
    "a@b.co",
    "\u212a@x.io",  # the Kelvin sign lower-cases to k
    "\u017f@x.io",  # a long s: lower-case already, not an ASCII letter
    "a b@x.io",
    "@x.io",
    "a@x..io",
    "a@-x.io",
    "a" * 250 + "@x.io",
    "user+tag@sub.domain.io",
    "ü@x.io",
]


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, *fields: object) -> None:
        self.rows.append(fields)


def _validated(text: str, required: list[str]) -> tuple:
    reader = csv.reader(io.StringIO(text), strict=True)
    mapping = header_map(next(reader), column_map={}, required=required)
    report, stats = Report(), ImportStats()
    batches = list(rows_validated(reader, mapping, report, stats, 7))
    return batches, report.rows, stats


def _field(rng: random.Random, column: str) -> str:
    if column == "email":
        padding = rng.choice(["", "", " ", "\t", "\u00a0"])
        return padding + rng.choice(EMAILS) + rng.choice(["", "", " "])
    if column == "country":
        return rng.choice(["GB", "gb", " GB", "GBR", "", "G", "1A", "ÉÉ", "US "])
    if column == "phone":
        return rng.choice(["+44 20 7946 0000", " +1", "call", "", "1" * 50, "1" * 51, "1 "])
    return "".join(rng.choice(TRICKY) for _ in range(rng.choice([0, 1, 2, 5, 150, 151])))


def test_the_one_pattern_check_and_the_field_by_field_checks_agree(monkeypatch):
    rng = random.Random(11)
    texts = []
    for _ in range(300):
        optional = ("first_name", "last_name", "phone", "country", "plan")
        columns = ["email", *(c for c in optional if rng.random() < 0.7)]
        rng.shuffle(columns)
        required = ["email"] + [
            c for c in columns if c not in ("email", "plan") and rng.random() < 0.3
        ]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for _ in range(rng.randint(1, 20)):
            writer.writerow([_field(rng, column) for column in columns])
        texts.append((buffer.getvalue(), required))

    fast = [_validated(text, required) for text, required in texts]
    # The same files with a pattern that matches nothing: every row checked field by field.
    real = contact_csv._fast_check
    never = re.compile("(?!)")
    monkeypatch.setattr(
        contact_csv,
        "_fast_check",
        lambda mapping: dataclasses.replace(real(mapping), pattern=never),
    )
    slow = [_validated(text, required) for text, required in texts]

    assert fast == slow
    kept = sum(len(batch) for batches, _, _ in fast for batch in batches)
    assert kept > 300  # many rows kept, not all rejected


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (
            "ANN@Example.com,Ann,Lee,+1 555 0100,GB",
            ("ann@example.com", "Ann", "Lee", "+1 555 0100", "GB"),
        ),
        (" ann@example.com , Ann ,Lee,,gb", ("ann@example.com", "Ann", "Lee", "", "GB")),
    ],
)
def test_clean_and_untidy_rows_give_the_same_values(line, kept):
    batches, rejected, _ = _validated(
        "email,first_name,last_name,phone,country\n" + line, ["email"]
    )

    assert rejected == []
    assert batches == [[(*kept, "{}")]]


def test_batches_start_small_and_double_up_to_the_batch_size():
    rows = "".join(f"u{i}@x.io\n" for i in range(40))
    reader = csv.reader(io.StringIO("email\n" + rows), strict=True)
    mapping = header_map(next(reader), column_map={}, required=[])
    stats = ImportStats()

    batches = list(rows_validated(reader, mapping, Report(), stats, 16))

    assert [len(batch) for batch in batches] == [2, 4, 8, 16, 10]
    assert [row[0] for batch in batches for row in batch] == [f"u{i}@x.io" for i in range(40)]
    assert stats.rows == 40
