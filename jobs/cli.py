"""What `manage.py jobs` prints: job lines, tables and a live progress bar.

Rendering only; the command (jobs/management/commands/jobs.py) reads and writes through
selectors and services.
"""

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from jobs.models import TERMINAL_STATUSES, Job, JobStatus

# Exit codes of `manage.py jobs`, for scripts (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the job ended failed or dead
EXIT_USAGE = 2  # bad arguments or input: nothing was done
EXIT_CANCELLED = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5  # --wait / watch gave up before the job finished

BAR_WIDTH = 30


def exit_code(status: str) -> int:
    if status == JobStatus.SUCCEEDED:
        return EXIT_OK
    if status == JobStatus.CANCELLED:
        return EXIT_CANCELLED
    if status in (JobStatus.FAILED, JobStatus.DEAD):
        return EXIT_FAILED
    return EXIT_TIMEOUT


def progress_bar(job: Job, *, width: int = BAR_WIDTH) -> str:
    """`[#########.....................]  30%  3/10  step 3 of 10  running`"""
    percent = job.progress_percent
    if percent is None and job.status == JobStatus.SUCCEEDED:
        percent = 100.0
    filled = round(width * (percent or 0) / 100)
    bar = "#" * filled + "." * (width - filled)
    shown = f"{percent:5.1f}%" if percent is not None else "    -%"
    count = ""
    if job.progress_current is not None:
        count = f"  {job.progress_current}" + (
            f"/{job.progress_total}" if job.progress_total is not None else ""
        )
    message = f"  {job.progress_message}" if job.progress_message else ""
    return f"[{bar}] {shown}{count}{message}  {job.status}"


def job_line(job: Job) -> str:
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else "-"
    percent = f"{job.progress_percent:.0f}%" if job.progress_percent is not None else "-"
    return f"{job.id}  {job.kind:<20} {job.status:<10} {percent:>5}  {created}"


def job_detail(job: Job) -> str:
    lines = [
        f"id        {job.id}",
        f"kind      {job.kind}",
        f"status    {job.status} (version {job.version})",
        f"owner     {job.owner.get_username() if job.owner else '(system)'}",
        f"queue     {job.queue}, priority {job.priority}",
        f"attempts  {job.attempts}",
        f"progress  {progress_bar(job)}",
        f"created   {job.created_at:%Y-%m-%d %H:%M:%S %Z}",
    ]
    if job.finished_at:
        lines.append(f"finished  {job.finished_at:%Y-%m-%d %H:%M:%S %Z}")
    lines.append("params    " + json.dumps(job.params, sort_keys=True))
    lines += outcome_lines(job)
    return "\n".join(lines)


def outcome_lines(job: Job) -> list[str]:
    if job.status == JobStatus.SUCCEEDED:
        return ["result    " + json.dumps(job.result, sort_keys=True)]
    if job.error:
        return [f"error     {job.error.get('type', 'Error')}: {job.error.get('message', '')}"]
    return []


def table(rows: Iterable[tuple], header: tuple[str, ...]) -> str:
    rows = [tuple(str(cell) for cell in row) for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{width}}}" for width in widths)
    return "\n".join(fmt.format(*row).rstrip() for row in [header, *rows])


def watch(
    load: Callable[[], Job],
    *,
    out: TextIO,
    tty: bool,
    timeout: float | None,
    interval: float = 0.2,
) -> Job:
    """Follow a job until it finishes (or `timeout` seconds pass). On a terminal the bar is
    redrawn in place; otherwise one line is printed per change. Only the job's version is
    compared between reads, so an unchanged job costs one small query per interval."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = -1
    job = load()
    while True:
        if job.version != seen:
            seen = job.version
            line = progress_bar(job)
            out.write(f"\r\x1b[2K{line}" if tty else f"{line}\n")
            out.flush()
        if job.status in TERMINAL_STATUSES:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(interval)
        job = load()
    if tty:
        out.write("\n")
    for line in outcome_lines(job):
        out.write(line + "\n")
    out.flush()
    return job


def param_parse(pairs: Iterable[str]) -> dict[str, Any]:
    """`k=v` pairs: v is read as JSON when it parses (numbers, booleans, lists), else as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params
