"""Contacts export of 1,000,000 rows: CSV and XLSX, time and peak memory, each against an
anchor measured in the same run.

The contacts table is filled with `--rows` contacts by one psycopg COPY (not timed). Then
each measurement runs in a fresh child process (so its peak RSS is its own), one after the
other:
- csv anchor: raw psycopg `COPY (SELECT … ORDER BY email) TO STDOUT (FORMAT csv, HEADER)`
  of the export's columns, written to a file: PostgreSQL formats, Python only copies bytes;
- csv Offload: `reports.services.report_make` for a contacts_export CSV, as the `report`
  kind runs it: count, then `COPY (SELECT …) TO STDOUT` on its own connection with every
  cell formatted by the server (formula escaping of every text cell: every phone number
  here starts with `+`; ISO times in the configured time zone), written to a temporary
  file, then stored (hashed and copied into Django's storage) and recorded as a
  StoredFile;
- xlsx anchor: the same rows from a raw psycopg server-side cursor written with XlsxWriter
  (constant_memory) through `worksheet.write_row`, untyped conversion left to XlsxWriter;
- xlsx Offload: `report_make` for a contacts_export XLSX (typed cells, time zone
  conversion, storing as above).
Time is wall time of the work in the child; peak RSS is the child's VmHWM at the end, shown
with its VmHWM just before the work started (interpreter, Django and libraries loaded).

    python bench/reports_export.py [--rows 100000,1000000] [--only csv,xlsx]
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, DATABASE_URL, bench_env, database_prepare, results_write, sized

COUNTRIES = ("GB", "US", "FR", "DE", "NL", "ES", "IT", "SE", "PL", "IE")
EXPORT_SQL = """
    SELECT email, first_name, last_name, phone, country, unsubscribed_at IS NULL,
           unsubscribed_at, created_at, updated_at, attributes::text
    FROM notifications_contact ORDER BY email
"""


def contacts_load(rows: int) -> float:
    """Empty the contacts table and COPY `rows` contacts into it; returns the seconds."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute("TRUNCATE notifications_emailsend, notifications_contact RESTART IDENTITY")
        columns = ("email, first_name, last_name, phone, country, attributes, "
                   "unsubscribed_at, created_at, updated_at")  # fmt: skip
        with conn.cursor().copy(f"COPY notifications_contact ({columns}) FROM STDIN") as copy:
            block = io.StringIO()
            for i in range(rows):
                unsubscribed = "2026-01-02 03:04:05+00" if i % 10 == 0 else "\\N"
                block.write(
                    f"user{i:07d}@example{i % 97}.com\tFirst{i % 5000}\tLast{i % 7919}\t"
                    f"+44 20 7946 {i % 10000:04d}\t{COUNTRIES[i % 10]}\t"
                    f'{{"plan": "plan{i % 3}", "score": {i % 100}}}\t{unsubscribed}\t'
                    f"2026-01-01 00:00:00+00\t2026-01-01 00:00:00+00\n"
                )
                if i % 50_000 == 49_999:
                    copy.write(block.getvalue())
                    block = io.StringIO()
            copy.write(block.getvalue())
        conn.execute("ANALYZE notifications_contact")
        conn.commit()
    return time.monotonic() - started


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _child(what: str, folder: Path) -> dict:
    """One measurement, in this (child) process."""
    import django

    django.setup()
    import psycopg
    import xlsxwriter
    from django.conf import settings

    from jobs.models import Job
    from reports import services

    before = _hwm_kib()
    rows = 0
    started = time.monotonic()
    if what == "csv-anchor":
        out_path = folder / "anchor.csv"
        copy_sql = f"COPY ({EXPORT_SQL}) TO STDOUT WITH (FORMAT csv, HEADER true)"
        with (
            psycopg.connect(DATABASE_URL) as conn,
            out_path.open("wb") as out,
            conn.cursor().copy(copy_sql) as copy,
        ):
            for block in copy:
                out.write(block)
        size = out_path.stat().st_size
        with out_path.open("rb") as written:
            rows = sum(1 for _ in written) - 1
    elif what == "xlsx-anchor":
        out_path = folder / "anchor.xlsx"
        book = xlsxwriter.Workbook(
            str(out_path), {"constant_memory": True, "remove_timezone": True}
        )
        sheet = book.add_worksheet("contacts")
        with psycopg.connect(DATABASE_URL) as conn, conn.cursor(name="anchor") as cursor:
            cursor.itersize = settings.OFFLOAD_REPORT_CHUNK_ROWS
            cursor.execute(EXPORT_SQL)
            sheet.write_row(0, 0, [d.name for d in cursor.description])
            for rows, record in enumerate(cursor, start=1):
                sheet.write_row(rows, 0, record)
        book.close()
        size = out_path.stat().st_size
    else:
        fmt = what.split("-")[0]
        params = {"type": "contacts_export", "format": fmt, "filters": {}}
        job = Job.objects.create(kind="report", params=params)
        made = services.report_make(
            params=params, owner_id=None, job_id=job.id, progress=lambda *a: None
        )
        rows, size = made.rows, made.stored.size
    seconds = time.monotonic() - started
    return {
        "rows": rows,
        "bytes": size,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(_hwm_kib() / 1024, 1),
    }


def measure(what: str, folder: Path, media: Path) -> dict:
    env = bench_env(DJANGO_MEDIA_ROOT=str(media))
    done = subprocess.run(
        [str(BIN / "python"), __file__, "--child", what, "--folder", str(folder)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def size_run(rows: int, formats: list[str]) -> dict:
    load_seconds = contacts_load(rows)
    print(f"loaded {rows} contacts by COPY in {load_seconds:.1f} s", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        for fmt in formats:
            for side in ("anchor", "offload"):
                folder = Path(tmp) / f"{fmt}-{side}"
                folder.mkdir()
                runs[f"{fmt}_{side}"] = measure(f"{fmt}-{side}", folder, Path(tmp) / "media")
                print(f"  {fmt} {side}: {runs[f'{fmt}_{side}']}", flush=True)
    ratios = {}
    for fmt in formats:
        anchor, offload = runs[f"{fmt}_anchor"], runs[f"{fmt}_offload"]
        if anchor["rows"] != offload["rows"] or offload["rows"] != rows:
            raise RuntimeError(f"{fmt}: anchor wrote {anchor['rows']}, Offload {offload['rows']}")
        ratios[fmt] = round(offload["rows_per_s"] / anchor["rows_per_s"], 3)
    return {"rows": rows, "load_seconds": round(load_seconds, 1), "runs": runs, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", default=sized("100000,1000000", "100000"), help="comma-separated sizes"
    )
    parser.add_argument("--only", default="csv,xlsx", help="formats to measure")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.update(bench_env())
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(json.dumps(_child(args.child, Path(args.folder))))
        return

    formats = args.only.split(",")
    database_prepare()
    sizes = [size_run(int(rows), formats) for rows in args.rows.split(",")]
    print(f"Contacts export, PostgreSQL {DATABASE_URL.rsplit('/', 1)[-1]}, "
          f"{os.cpu_count()} cores; each run in its own process")  # fmt: skip
    print(f"{'rows':>9} {'run':<14}{'MB':>8}{'seconds':>9}{'rows/s':>10}{'ratio':>7}"
          f"{'RSS before':>12}{'peak':>10}")  # fmt: skip
    for size in sizes:
        for name, run in size["runs"].items():
            fmt, side = name.split("_")
            ratio = f"{size['ratios'][fmt]:.2f}" if side == "offload" else ""
            print(f"{size['rows']:>9} {name:<14}{run['bytes'] / 1e6:>8.1f}{run['seconds']:>9.2f}"
                  f"{run['rows_per_s']:>10}{ratio:>7}{run['rss_before_mib']:>8.1f} MiB"
                  f"{run['rss_peak_mib']:>6.1f} MiB")  # fmt: skip
    print("ratio: Offload's rows/s over its anchor's (csv: raw COPY TO STDOUT; xlsx: a raw "
          "XlsxWriter loop over the same rows)")  # fmt: skip
    for fmt in formats:
        growth = [
            round(s["runs"][f"{fmt}_offload"]["rss_peak_mib"]
                  - s["runs"][f"{fmt}_offload"]["rss_before_mib"], 1)
            for s in sizes
        ]  # fmt: skip
        print(f"{fmt}: peak RSS growth over the process's start, MiB, per size: {growth}")
    path = results_write("reports_export", {"sizes": sizes})
    print(f"written {path}")


if __name__ == "__main__":
    main()
