"""The report files themselves, read back with the libraries users open them with (csv,
openpyxl, pypdf) and checked against what the database holds: job statistics in CSV, XLSX
and PDF, contact exports with filters, formula-injection escaping, typed spreadsheet cells,
and nothing stored when a run stops half-way."""

import csv
import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy
import openpyxl
import pytest
from django.core.files.storage import default_storage
from pypdf import PdfReader

from jobs.errors import JobCancelled
from jobs.models import FilePurpose, Job, StoredFile
from notifications.models import Contact
from reports import selectors, services, writers
from tests.reportdata import DAY, MIDNIGHT

pytestmark = pytest.mark.django_db(transaction=True)


def _make(params: dict, owner_id=None, progress=lambda *a: None) -> services.Made:
    job = Job.objects.create(kind="report", owner_id=owner_id, params=params)
    return services.report_make(params=params, owner_id=owner_id, job_id=job.id, progress=progress)


def _stats_params(fmt: str, all_users: bool = False) -> dict:
    return {"type": "job_stats", "format": fmt, "start": DAY.isoformat(),
            "end": DAY.isoformat(), "all_users": all_users}  # fmt: skip


def _bytes(made: services.Made) -> bytes:
    with default_storage.open(made.stored.storage_name, "rb") as stored:
        return stored.read()


def _expected(owner_id):
    """The statistics computed here from the rows, independently of the report code."""
    jobs = Job.objects.all() if owner_id is None else Job.objects.filter(owner_id=owner_id)
    end = MIDNIGHT + timedelta(days=1)
    created = [j for j in jobs if MIDNIGHT <= j.created_at < end]
    finished = [j for j in jobs if j.finished_at and MIDNIGHT <= j.finished_at < end]
    durations: dict[str, list[float]] = {}
    for job in finished:
        if job.status in ("succeeded", "failed", "dead"):
            seconds = (job.finished_at - job.started_at).total_seconds()
            durations.setdefault(job.kind, []).append(seconds)
    return {
        "counts": Counter((j.kind, j.status) for j in created),
        "durations": {
            kind: [len(values), *numpy.percentile(values, [50, 95, 99])]
            for kind, values in durations.items()
        },
        "errors": Counter(
            (j.kind, j.error["type"], j.error["message"]) for j in finished if j.error
        ),
        "hours": Counter(j.finished_at.replace(minute=0, second=0) for j in finished),
    }


def _csv_sections(text: str) -> dict[str, list[list[str]]]:
    sections = {}
    for block in text.strip("\r\n").split("\r\n\r\n"):
        title, _, body = block.partition("\r\n")
        assert title.startswith("# ")
        sections[title[2:]] = list(csv.reader(io.StringIO(body)))
    return sections


def test_job_stats_csv_matches_the_database(jobs_of_a_day, user):
    made = _make(_stats_params("csv"), owner_id=user.id)
    sections = _csv_sections(_bytes(made).decode())
    want = _expected(user.id)

    counts = sections["counts"]
    assert counts[0] == ["kind", "status", "jobs"]
    assert {(k, s): int(n) for k, s, n in counts[1:]} == dict(want["counts"])
    durations = sections["durations"]
    assert durations[0] == ["kind", "runs", "mean_s", "p50_s", "p95_s", "p99_s", "min_s", "max_s"]
    got = {row[0]: [int(row[1]), *map(float, row[3:6])] for row in durations[1:]}
    assert got.keys() == want["durations"].keys()
    for kind, values in want["durations"].items():
        assert got[kind] == pytest.approx(values), kind
    errors = sections["errors"]
    # The message starts with "=": escaped like any text cell.
    assert {(k, t, m, int(n)) for k, t, m, n in errors[1:]} == {
        (kind, etype, ("'" + message) if message.startswith("=") else message, n)
        for (kind, etype, message), n in want["errors"].items()
    }
    hours = {row[0]: int(row[1]) for row in sections["throughput"][1:]}
    assert len(hours) == 24  # every hour of the day, zeros included
    assert {h: n for h, n in hours.items() if n} == {
        hour.isoformat(timespec="microseconds"): n for hour, n in want["hours"].items()
    }
    summary = dict(sections["summary"][1:])
    assert summary["scope"] == "own jobs"
    assert int(summary["jobs jobs"]) == sum(want["counts"].values())
    assert made.stored.purpose == FilePurpose.REPORT
    assert made.stored.owner_id == user.id
    assert made.stored.content_type == "text/csv"


def test_job_stats_counts_only_the_owners_jobs_unless_all_users(jobs_of_a_day, user):
    own = _csv_sections(_bytes(_make(_stats_params("csv"), owner_id=user.id)).decode())
    every = _csv_sections(_bytes(_make(_stats_params("csv", all_users=True))).decode())

    own_kinds = {row[0] for row in own["counts"][1:]}
    every_kinds = {row[0] for row in every["counts"][1:]}
    assert own_kinds == {"thumbnail", "csv_import"}
    assert every_kinds == {"thumbnail", "csv_import", "demo.sleep", "cleanup"}
    want = _expected(None)
    assert {(k, s): int(n) for k, s, n in every["counts"][1:]} == dict(want["counts"])


def test_durations_agree_between_postgresql_and_the_portable_path(jobs_of_a_day):
    stats = selectors.job_stats(start=DAY, end=DAY, owner_id=None)
    lo, hi = selectors.day_bounds(DAY, DAY)
    portable = selectors.durations_portable(
        Job.objects.filter(finished_at__gte=lo, finished_at__lt=hi)
    )
    assert [row["kind"] for row in portable] == [row["kind"] for row in stats.durations]
    for mine, theirs in zip(portable, stats.durations, strict=True):
        assert mine == pytest.approx(theirs)


def test_job_stats_xlsx_has_typed_cells_and_a_header_row(jobs_of_a_day, user):
    made = _make(_stats_params("xlsx"), owner_id=user.id)
    book = openpyxl.load_workbook(io.BytesIO(_bytes(made)))
    want = _expected(user.id)

    assert book.sheetnames == ["summary", "counts", "durations", "errors", "throughput"]
    counts = book["counts"]
    assert [c.value for c in counts[1]] == ["kind", "status", "jobs"]
    assert all(c.font.b for c in counts[1])
    assert counts.freeze_panes == "A2"
    rows = list(counts.iter_rows(min_row=2, values_only=True))
    assert all(isinstance(n, int) for _, _, n in rows)
    assert {(k, s): n for k, s, n in rows} == dict(want["counts"])
    durations = {r[0]: r for r in book["durations"].iter_rows(min_row=2, values_only=True)}
    for kind, (runs, p50, p95, p99) in want["durations"].items():
        assert durations[kind][1] == runs
        assert durations[kind][3:6] == pytest.approx((p50, p95, p99))
    errors = list(book["errors"].iter_rows(min_row=2, values_only=True))
    # A text cell starting with "=" is a string, not a formula.
    assert ("csv_import", "CsvImportError", "=bad header <b>", 3) in errors
    assert all(cell.data_type == "s" for row in book["errors"].iter_rows(min_row=2)
               for cell in row[:3])  # fmt: skip
    hours = list(book["throughput"].iter_rows(min_row=2, values_only=True))
    assert len(hours) == 24
    assert hours[0][0] == MIDNIGHT.replace(tzinfo=None)  # a date cell, in the time zone
    assert {h: n for h, n, _ in hours if n} == {
        hour.replace(tzinfo=None): n for hour, n in want["hours"].items()
    }


def test_job_stats_pdf_holds_the_figures_and_the_chart(jobs_of_a_day, user):
    made = _make(_stats_params("pdf"), owner_id=user.id)
    data = _bytes(made)
    reader = PdfReader(io.BytesIO(data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    want = _expected(user.id)

    assert data.startswith(b"%PDF-")
    assert made.stored.content_type == "application/pdf"
    assert f"Job statistics {DAY.isoformat()} to {DAY.isoformat()}" in text
    assert "the submitter's own jobs" in text
    assert f"jobs {sum(want['counts'].values())}" in text
    words = " ".join(text.split())  # table cells come out one per line
    for (kind, status), n in want["counts"].items():
        assert f"{kind} {status} {n}" in words, (kind, status)
    for kind, (runs, p50, p95, p99) in want["durations"].items():
        row = rf"{re.escape(kind)} {runs} [0-9.]+ {p50:.3f} {p95:.3f} {p99:.3f} "
        assert re.search(row, words), kind
    # Markup in an error message is text, not reportlab markup.
    assert "CsvImportError: =bad header <b>" in words
    assert "demo.sleep" not in text  # another user's job
    images = [image for page in reader.pages for image in page.images]
    assert len(images) == 1  # the throughput chart
    assert images[0].image.width > 600


def test_contacts_export_csv_applies_filters_and_escapes_formulas(contacts):
    params = {"type": "contacts_export", "format": "csv",
              "filters": {"country": ["GB", "FR"], "subscribed": True}}  # fmt: skip
    made = _make(params)
    rows = list(csv.reader(io.StringIO(_bytes(made).decode())))
    want = Contact.objects.filter(country__in=["GB", "FR"], unsubscribed_at__isnull=True)

    assert rows[0] == [name for name, _ in selectors.CONTACT_COLUMNS]
    assert [r[0] for r in rows[1:]] == sorted(want.values_list("email", flat=True))
    assert made.rows == want.count() == 3
    by_email = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    ann = by_email["ann@example.com"]
    assert ann["first_name"] == '\'=HYPERLINK("http://x")'
    assert ann["phone"] == "'+44 20 7946 0000"
    assert json.loads(ann["attributes"]) == {"plan": "gold", "n": 3}
    assert ann["subscribed"] == "true"
    assert ann["unsubscribed_at"] == ""
    created = Contact.objects.get(email="ann@example.com").created_at
    assert ann["created_at"] == created.isoformat(timespec="microseconds")
    assert by_email["cy@example.com"]["first_name"] == "'@SUM(A1)"
    assert by_email["cy@example.com"]["last_name"] == "'\tTab"
    assert by_email["di@example.com"]["first_name"] == "'\rCR"
    assert by_email["di@example.com"]["last_name"] == "a=b"  # only a leading sign counts


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["ann", "bob", "cy", "di", "ed"]),
        ({"subscribed": False}, ["bob", "ed"]),
        ({"attributes": {"plan": "gold"}}, ["ann", "cy", "ed"]),
        ({"attributes": {"plan": "gold", "n": 3}}, ["ann"]),
        ({"country": ["US"], "attributes": {"plan": "gold"}}, []),
    ],
)
def test_contacts_export_filters(contacts, filters, expected):
    made = _make({"type": "contacts_export", "format": "csv", "filters": filters})
    rows = list(csv.reader(io.StringIO(_bytes(made).decode())))
    assert [r[0].split("@")[0] for r in rows[1:]] == expected


def test_contacts_export_xlsx_has_typed_cells(contacts):
    made = _make({"type": "contacts_export", "format": "xlsx", "filters": {}})
    sheet = openpyxl.load_workbook(io.BytesIO(_bytes(made)))["contacts"]
    header = [c.value for c in sheet[1]]
    rows = {r[0].value: dict(zip(header, r, strict=True)) for r in sheet.iter_rows(min_row=2)}

    assert header == [name for name, _ in selectors.CONTACT_COLUMNS]
    assert sorted(rows) == [c.email for c in contacts]
    ann, bob = rows["ann@example.com"], rows["bob@example.com"]
    assert ann["first_name"].value == '=HYPERLINK("http://x")'
    assert ann["first_name"].data_type == "s"  # a string, never a formula
    assert ann["subscribed"].value is True
    assert bob["subscribed"].value is False
    bob_row = Contact.objects.get(email="bob@example.com")
    assert bob["unsubscribed_at"].value == bob_row.unsubscribed_at.replace(tzinfo=None)
    assert bob["created_at"].is_date
    assert ann["unsubscribed_at"].value is None
    assert json.loads(ann["attributes"].value) == {"plan": "gold", "n": 3}


def test_a_table_longer_than_a_sheet_continues_on_the_next(contacts, monkeypatch):
    monkeypatch.setattr(writers, "XLSX_MAX_ROWS", 3)  # a header and two rows per sheet
    made = _make({"type": "contacts_export", "format": "xlsx", "filters": {}})
    book = openpyxl.load_workbook(io.BytesIO(_bytes(made)))

    assert book.sheetnames == ["contacts", "contacts (2)", "contacts (3)"]
    emails = []
    for sheet in book:
        assert sheet["A1"].value == "email"
        emails += [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert emails == [c.email for c in contacts]
    assert made.rows == 5


def test_a_run_stopped_half_way_stores_nothing(contacts, settings):
    settings.OFFLOAD_REPORT_CHUNK_ROWS = 2

    def progress(current, total, message):
        if current:
            raise JobCancelled("cancelled")

    for fmt in ("csv", "xlsx"):
        with pytest.raises(JobCancelled):
            _make({"type": "contacts_export", "format": fmt, "filters": {}}, progress=progress)
    assert not StoredFile.objects.exists()
    for job in Job.objects.filter(kind="report"):
        assert not Path(default_storage.path(f"reports/{job.id}")).exists()


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_the_postgresql_copy_path_writes_what_the_python_path_writes(
    contacts, tmp_path, settings, zone
):
    settings.TIME_ZONE = zone
    Contact.objects.create(
        email="quote@example.com", first_name='Say "hi"', last_name="two\nlines",
        phone=",comma", country="", attributes={"note": 'a,b\n"c"'},
    )  # fmt: skip
    Contact.objects.filter(email="ann@example.com").update(
        unsubscribed_at=datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)
    )
    table = services.contacts_table({})
    select = selectors.contacts_csv_select(selectors.contacts_filtered({}))

    by_python = writers.csv_write([table], tmp_path / "p.csv", on_row=lambda n: None)
    by_copy = writers.csv_copy_write(
        columns=table.columns, select=select, path=tmp_path / "c.csv", on_row=lambda n: None
    )

    def parsed(name):
        with (tmp_path / name).open(encoding="utf-8", newline="") as text:
            return list(csv.reader(text))

    assert by_python == by_copy == 6
    assert parsed("c.csv") == parsed("p.csv")
    rows = {row[0]: row for row in parsed("c.csv")}
    assert rows["quote@example.com"][1:4] == ['Say "hi"', "two\nlines", ",comma"]
    offset = {"UTC": "+00:00", "America/New_York": "-04:00", "Asia/Kolkata": "+05:30"}[zone]
    assert rows["ann@example.com"][6].endswith(f".123456{offset}")


def test_a_copy_cancelled_after_its_first_block_stops_and_leaves_a_usable_connection():
    Contact.objects.bulk_create(
        Contact(email=f"user{i:06d}@example.com", first_name="x" * 50, country="GB")
        for i in range(40_000)
    )
    blocks = []

    def progress(current, total, message):
        if current:
            blocks.append(current)
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        _make({"type": "contacts_export", "format": "csv", "filters": {}}, progress=progress)

    assert 0 < blocks[0] < 40_000  # stopped inside the COPY, not after it
    assert Contact.objects.count() == 40_000  # the connection answers again
    assert not StoredFile.objects.exists()


def test_formula_escaping_of_every_leading_character():
    for lead in ("=", "+", "-", "@", "\t", "\r"):
        assert writers.cell_escape(f"{lead}1") == f"'{lead}1"
    for safe in ("1+1", "a@b", " =1", "", "'=1"):
        assert writers.cell_escape(safe) == safe
