"""Run every benchmark in bench/ and collect what they measured.

A benchmark is a script in bench/ that writes its figures with `results_write(...)` (see
common.py); helpers (common.py, loadgen.py, peers, receivers) are not run. Each runs in its
own process with a time limit; its output is shown as it comes. Afterwards:
- bench/results/latest.json: the machine, the mode, and per benchmark its status, duration
  and figures;
- bench/results/latest.png: every ratio the benchmarks report (Offload against its anchor
  or budget: 1.0 is par);
- README.md: the table between the `bench:start` / `bench:end` markers of "Performance".
With `--only`, the named benchmarks replace their entries in latest.json; the others stay.

    python bench/run_all.py [--only throughput,api] [--timeout 1800]

Environment: BENCH_QUICK=1 (smaller workloads, minutes on 2 cores), BENCH_TIMEOUT (seconds
per benchmark), BENCH_DATABASE_URL, BENCH_BROKER_URL, BENCH_NOTE (a remark on the conditions,
kept with the results and shown in the README).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import QUICK, RESULTS, ROOT, machine

BENCH = ROOT / "bench"
README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
FIRST = ("throughput", "latency", "api")  # the core figures first, then the rest by name


def discover() -> list[Path]:
    scripts = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        source = path.read_text()
        is_script = '__name__ == "__main__"' in source
        if "results_write(" in source and is_script and path.name != "common.py":
            scripts.append(path)
    order = {name: index for index, name in enumerate(FIRST)}
    return sorted(scripts, key=lambda p: (order.get(p.stem, len(FIRST)), p.stem))


def run_one(path: Path, timeout: float) -> dict:
    started = time.monotonic()
    since = time.time()
    print(f"\n=== {path.stem} ({'quick' if QUICK else 'full'}, limit {timeout:.0f} s)", flush=True)
    process = subprocess.Popen(
        [sys.executable, str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    tail: list[str] = []
    status = "ok"
    deadline = started + timeout
    os.set_blocking(process.stdout.fileno(), False)
    buffer = b""
    while True:
        chunk = process.stdout.read()
        if chunk:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                print(f"  {text}", flush=True)
                tail = [*tail[-40:], text]
        if process.poll() is not None and not chunk:
            break
        if time.monotonic() > deadline:
            status = "timeout"
            os.killpg(process.pid, 9)
            process.wait()
            break
        time.sleep(0.05)
    if status == "ok" and process.returncode != 0:
        status = f"failed (exit {process.returncode})"
    result_file = RESULTS / f"{path.stem}.json"
    figures = None
    if status == "ok" and result_file.exists() and result_file.stat().st_mtime >= since:
        figures = json.loads(result_file.read_text())
        figures.pop("machine", None)
    elif status == "ok":
        status = "failed (no results written)"
    print(f"=== {path.stem}: {status} in {time.monotonic() - started:.0f} s", flush=True)
    return {
        "status": status,
        "seconds": round(time.monotonic() - started, 1),
        "results": figures,
        **({} if status == "ok" else {"output_tail": tail[-20:]}),
    }


def ratios_of(name: str, value: object, prefix: str = "") -> dict[str, float]:
    """Every `ratio*` figure in a benchmark's results, named by its path."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if key.startswith("ratio") and isinstance(item, int | float):
                found[f"{name}: {path}"] = float(item)
            else:
                found.update(ratios_of(name, item, path))
    return found


def budgets_of(value: object, prefix: str = "") -> dict[str, bool]:
    found: dict[str, bool] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "budgets" and isinstance(item, dict):
                found.update({f"{prefix}{k}": bool(v) for k, v in item.items()})
            else:
                found.update(budgets_of(item, prefix))
    return found


def chart_write(ratios: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ratios)[::-1]
    values = [ratios[name] for name in names]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(names) + 1.5))
    # Throughput ratios are better above 1.0, latency ratios below: one neutral colour.
    limit = min(max(values) * 1.15, 3.0)  # one outlier must not flatten every other bar
    ax.barh(names, [min(v, limit) for v in values], color="#4a6fa5")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlim(0, limit * 1.12)
    for y, v in enumerate(values):
        ax.text(min(v, limit), y, f" {v:.2f}" + (" (cut)" if v > limit else ""),
                va="center", fontsize=8)  # fmt: skip
    ax.set_xlabel(
        "ratio: 1.0 = par with the anchor or budget (rates: higher is better, "
        "delays: lower is better)"
    )
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _throughput_table(results: dict) -> list[str]:
    rows = ["| system | jobs/s | x bare Celery | publish/s | x bare Celery publish |",
            "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, fig in results.items():
        if isinstance(fig, dict) and "jobs_per_s" in fig:
            rows.append(f"| {name} | {fig['jobs_per_s']:.0f} | {fig['ratio_jobs']:.2f} | "
                        f"{fig['publish_per_s']:.0f} | {fig['ratio_publish']:.2f} |")  # fmt: skip
    return rows


def readme_section(report: dict, ratios: dict[str, float], budgets: dict[str, bool]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['finished_at'][:16].replace('T', ' ')} UTC on {m['cpus']} cores, "
        f"Python {m['python']}, {m['platform']}; mode: {report['mode']}. Reproduce with "
        "`make bench` (`BENCH_QUICK=1 make bench` for the quick mode). Ratios are against an "
        "anchor measured in the same run on the same machine."
        + (f" Note: {report['note']}" if report.get("note") else ""),
        "",
    ]
    throughput = (report["benchmarks"].get("throughput") or {}).get("results")
    if throughput:
        lines += ["No-op jobs end to end (`bench/throughput.py`):", ""]
        lines += [*_throughput_table(throughput), ""]
    lines += ["| benchmark | status | seconds |", "| --- | --- | ---: |"]
    for name, entry in report["benchmarks"].items():
        lines.append(f"| {name} | {entry['status']} | {entry['seconds']:.0f} |")
    lines += ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ratios.items()]
    if budgets:
        lines += ["", "| budget | met |", "| --- | --- |"]
        lines += [f"| {name} | {'yes' if met else 'no'} |" for name, met in budgets.items()]
    lines += ["", "![ratios](bench/results/latest.png)"]
    return "\n".join(lines)


def readme_update(section: str) -> bool:
    text = README.read_text()
    pattern = re.compile(re.escape(MARK_START) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        return False
    README.write_text(pattern.sub(lambda _: f"{MARK_START}\n{section}\n{MARK_END}", text))
    return True


def _rank(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("BENCH_TIMEOUT", "900" if QUICK else "3600")),
        help="seconds per benchmark",
    )
    args = parser.parse_args()
    scripts = discover()
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only.split(",")]
    print(f"benchmarks: {', '.join(p.stem for p in scripts)}")
    started = datetime.now(UTC)
    benchmarks = {path.stem: run_one(path, args.timeout) for path in scripts}
    previous = RESULTS / "latest.json"
    if args.only and previous.exists():
        # A partial run replaces its benchmarks' entries and keeps the others.
        kept = json.loads(previous.read_text()).get("benchmarks", {})
        benchmarks = {**kept, **benchmarks}
        order = [p.stem for p in discover()]
        benchmarks = dict(sorted(benchmarks.items(), key=lambda kv: _rank(order, kv[0])))
    report = {
        "machine": machine(),
        "mode": "quick" if QUICK else "full",
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "benchmarks": benchmarks,
        "note": os.environ.get("BENCH_NOTE", ""),
    }
    ratios: dict[str, float] = {}
    budgets: dict[str, bool] = {}
    for name, entry in benchmarks.items():
        ratios.update(ratios_of(name, entry["results"]))
        budgets.update(budgets_of(entry["results"], f"{name}: "))
    report["ratios"], report["budgets"] = ratios, budgets
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    if ratios:
        title = f"Offload benchmarks, {report['mode']} mode, {machine()['cpus']} cores"
        chart_write(ratios, RESULTS / "latest.png", title)
    print("\n=== summary")
    for name, entry in benchmarks.items():
        print(f"{name:<16}{entry['status']:<28}{entry['seconds']:>7.0f} s")
    for name, value in ratios.items():
        print(f"  {name:<60}{value:>8.2f}")
    for name, met in budgets.items():
        print(f"  budget {name:<53}{'met' if met else 'MISSED':>8}")
    if readme_update(readme_section(report, ratios, budgets)):
        print("README.md Performance section updated")
    print("written bench/results/latest.json" + (", bench/results/latest.png" if ratios else ""))
    if any(entry["status"] != "ok" for entry in benchmarks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
