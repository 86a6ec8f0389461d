"""The job_stats report as a PDF (reportlab), with its throughput per hour drawn by
matplotlib. Text from the database (kinds, error messages) is escaped before reportlab's
paragraph markup sees it. The hourly table lists the hours in which jobs finished; the
chart shows every hour of the range."""

import io
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings

from reports.selectors import PERCENTILES, JobStats

CHART_WIDTH_INCH = 7.0
CHART_HEIGHT_INCH = 2.6


def throughput_chart_png(hours: list[tuple[datetime, int, int]]) -> bytes:
    """A bar chart of jobs finished per hour, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state shared between the jobs of one worker.
    figure = Figure(figsize=(CHART_WIDTH_INCH, CHART_HEIGHT_INCH), dpi=150)
    axes = figure.subplots()
    stamps = [hour for hour, _, _ in hours]
    axes.bar(stamps, [n for _, n, _ in hours], width=1 / 24, align="edge", color="#3b6ea5")
    axes.bar(stamps, [s for _, _, s in hours], width=1 / 24, align="edge", color="#7fb069")
    axes.set_title(f"Jobs finished per hour ({settings.TIME_ZONE})", fontsize=9)
    axes.set_ylabel("jobs", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(["finished", "succeeded"], fontsize=7, loc="upper right")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _table(rows: list[list[Any]], widths: list[float] | None = None) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f0f0f0")]),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def job_stats_pdf(stats: JobStats, path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import inch
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    scope = "every user's jobs" if stats.all_users else "the submitter's own jobs"
    hours = stats.hours()
    totals = stats.totals()
    story: list[Any] = [
        Paragraph(
            f"Job statistics {stats.start.isoformat()} to {stats.end.isoformat()}", styles["Title"]
        ),
        Paragraph(escape(f"Scope: {scope}. Days in {settings.TIME_ZONE}."), styles["BodyText"]),
        Paragraph(
            escape(
                "Totals (jobs created in the range): "
                + ", ".join(f"{name} {count}" for name, count in totals.items())
            ),
            styles["BodyText"],
        ),
        Spacer(1, 6),
        Image(
            io.BytesIO(throughput_chart_png(hours)),
            width=CHART_WIDTH_INCH * inch,
            height=CHART_HEIGHT_INCH * inch,
        ),
        Paragraph("Jobs per kind and status (created in the range)", styles["Heading2"]),
        _table(
            [["kind", "status", "jobs"]]
            + [[Paragraph(escape(r["kind"]), small), r["status"], r["count"]] for r in stats.counts]
        ),
        Paragraph("Run time per kind, seconds (finished in the range)", styles["Heading2"]),
        _table(
            [["kind", "runs", "mean", *(f"p{round(p * 100)}" for p in PERCENTILES), "max"]]
            + [
                [
                    Paragraph(escape(r["kind"]), small),
                    r["count"],
                    _seconds(r["mean"]),
                    *(_seconds(r[f"p{round(p * 100)}"]) for p in PERCENTILES),
                    _seconds(r["max"]),
                ]
                for r in stats.durations
            ]
        ),
        Paragraph("Most frequent errors", styles["Heading2"]),
        _table(
            [["jobs", "kind", "error"]]
            + [
                [
                    r["count"],
                    Paragraph(escape(r["kind"]), small),
                    Paragraph(escape(f"{r['type'] or ''}: {r['message']}"), small),
                ]
                for r in stats.errors
            ],
            widths=[0.5 * inch, 1.4 * inch, 5.1 * inch],
        ),
        Paragraph("Throughput per hour (hours with finished jobs)", styles["Heading2"]),
        _table(
            [["hour", "finished", "succeeded"]]
            + [
                [hour.strftime("%Y-%m-%d %H:%M %Z"), finished, succeeded]
                for hour, finished, succeeded in hours
                if finished
            ]
        ),
    ]
    document = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        title=f"Job statistics {stats.start.isoformat()} to {stats.end.isoformat()}",
        author="Offload",
        leftMargin=0.6 * inch,
        rightMargin=0.6 * inch,
    )
    document.build(story)
