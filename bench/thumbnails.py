"""12 MP JPEG to a 256 px thumbnail: a bare Pillow draft-decode loop (the anchor) against
the `thumbnail` kind through a real worker.

Both sides use the same cores and the same JPEG files: the loop reads the very files the
uploads stored, so both meet the same page cache. The loop (a multiprocessing pool) opens
a file, drafts it to the target box, decodes, applies Image.thumbnail and encodes a JPEG in
memory. Offload runs one `thumbnail` job per image (sizes [256], JPEG, quality 85) on a
prefork worker, bulk submitted while the worker is paused, from the worker's resume to the
last job's end: storage reads and writes, EXIF orientation, the output record and the job
lifecycle included.

Each side runs with each process count of `--processes` (default: one per CPU, as Celery's
own default, and one more, as Offload's bulk worker runs by default) and its best count is
compared. The loop never waits, so an extra process cannot raise its figure; a job waits on
the database at its start and end, and an extra worker process keeps the cores busy then.
For each count the sides alternate for `--rounds` rounds on the same running worker; each
side's best round over all counts is compared.

    python bench/thumbnails.py [-n 200] [--processes 2,3]
"""

import argparse
import io
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

from common import (
    BROKER_URL,
    bench_env,
    best_of,
    database_prepare,
    django_setup,
    jobs_unfinished,
    results_write,
    sized,
    tables_vacuum,
    wait_until,
    worker_start,
    worker_stop,
)

SIZE = 256
SOURCES = 8


def photo(seed: int) -> bytes:
    """A 4000 x 3000 (12 MP) JPEG with photo-like detail (noise over gradients), a few MB
    like a camera's."""
    from PIL import Image

    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((4000, 3000))
    noise = Image.effect_noise((4000, 3000), 12 + rng.randrange(8))
    image = Image.merge("RGB", (base, noise, base.rotate(180)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bare_one(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (SIZE, SIZE))
        image.load()
        image.thumbnail((SIZE, SIZE))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
    return len(out.getvalue())


def run_bare(paths: list[str], concurrency: int) -> dict:
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        pool.map(bare_one, paths[:concurrency])  # warm the pool up
        started = time.monotonic()
        sizes = pool.map(bare_one, paths, chunksize=1)
        seconds = time.monotonic() - started
    assert all(sizes)
    return _figures(len(paths), seconds, concurrency)


def offload_prepare(paths: list[str]) -> tuple[object, list, list[str]]:
    """Upload every file; returns the user, the jobs' specs and the stored files' paths."""
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.files.storage import default_storage

    from jobs.models import Job, StoredFile
    from jobs.services import JobSpec
    from jobs.uploads import upload_create
    from tests.support import queues_purge

    Job.objects.filter(kind="thumbnail").delete()
    StoredFile.objects.all().delete()
    tables_vacuum(Job, StoredFile)
    queues_purge()
    user, _ = get_user_model().objects.get_or_create(username="bench-thumbnails")
    specs, stored = [], []
    for path in paths:
        with open(path, "rb") as source:
            upload = upload_create(owner=user, file=File(source, name="photo.jpg"))
        params = {"upload": str(upload.id), "sizes": [SIZE], "format": "JPEG", "quality": 85}
        specs.append(JobSpec(kind="thumbnail", params=params))
        stored.append(default_storage.path(upload.storage_name))
    return user, specs, stored


def offload_run(user: object, specs: list, processes: int) -> dict:
    """The jobs are submitted while the worker does not consume, then the clock runs from
    the moment it consumes again: submitting is measured by bench/throughput.py, and the
    bare loop's files are ready before its clock starts too."""
    from config.celery_app import app
    from jobs.models import Job
    from jobs.services import jobs_bulk_submit

    # A connection of its own: the bare loop's forked pool leaves the shared one unusable.
    with app.connection_for_write() as connection:
        replies = app.control.cancel_consumer("bulk", reply=True, connection=connection)
        workers = [name for reply in replies for name in reply]
        try:
            jobs = jobs_bulk_submit(specs=specs, owner=user)
        finally:
            # The clock starts before the worker is told to resume; naming the worker makes
            # the call return at its reply instead of waiting out the broadcast timeout.
            started = time.monotonic()
            app.control.add_consumer("bulk", destination=workers, reply=True, connection=connection)
    ids = [job.id for job in jobs]
    # Every earlier thumbnail job has finished, so the poll asks whether any is left.
    done = wait_until(lambda: not jobs_unfinished("thumbnail"), timeout=1800, interval=0.05)
    failed = Job.objects.filter(id__in=ids).exclude(status="succeeded").count()
    if failed:
        raise RuntimeError(f"{failed} thumbnail jobs did not succeed")
    return _figures(len(ids), done - started, processes)


def _figures(n: int, seconds: float, processes: int) -> dict:
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1),
            "processes": processes}  # fmt: skip


def main() -> None:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=sized(200, 100), help="images per side")
    parser.add_argument(
        "--processes",
        default=f"{cpus},{cpus + 1}",
        help="process counts to run each side with, comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=sized(3, 2), help="rounds per count")
    args = parser.parse_args()
    counts = [int(count) for count in args.processes.split(",")]

    database_prepare()
    runs: dict[int, list[tuple[dict, dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        media = Path(tmp) / "media"
        os.environ["DJANGO_MEDIA_ROOT"] = str(media)
        django_setup()
        sources = [Path(tmp) / f"src{i}.jpg" for i in range(SOURCES)]
        for i, path in enumerate(sources):
            path.write_bytes(photo(i))
        user, specs, paths = offload_prepare([str(sources[i % SOURCES]) for i in range(args.n)])
        # The uploads are hundreds of MB of fresh page cache: flush it now, so its writeback
        # does not slow the database's commits during the measured rounds.
        os.sync()
        for count in counts:
            worker = worker_start(
                "config",
                queues="bulk",
                concurrency=count,
                env=bench_env(DJANGO_MEDIA_ROOT=str(media)),
                log=Path(tmp) / f"worker-{count}.log",
            )
            try:
                offload_run(user, specs[: count * 2], count)  # warm-up, not counted
                # The machine is shared: alternate the two sides and keep each side's best.
                runs[count] = [(run_bare(paths, count), offload_run(user, specs, count))
                               for _ in range(args.rounds)]  # fmt: skip
            finally:
                worker_stop(worker)
        source_mb = sum(p.stat().st_size for p in sources) / len(sources) / 1e6
    per_count = {
        count: {side: best_of([r[i] for r in rounds], "images_per_s")
                for i, side in enumerate(("bare", "offload"))}
        for count, rounds in runs.items()
    }  # fmt: skip
    bare = best_of([best["bare"] for best in per_count.values()], "images_per_s")
    offload = best_of([best["offload"] for best in per_count.values()], "images_per_s")
    ratio = round(offload["images_per_s"] / bare["images_per_s"], 3)
    print(
        f"12 MP JPEG ({source_mb:.1f} MB each) to {SIZE} px JPEG, n={args.n}, "
        f"{args.rounds} rounds per process count, broker {BROKER_URL.split('@')[-1]}, "
        f"{cpus} cores"
    )
    for count, rounds in runs.items():
        for number, (b, o) in enumerate(rounds, 1):
            print(
                f"{count} processes, round {number}: bare {b['images_per_s']:.1f}/s, "
                f"kind {o['images_per_s']:.1f}/s"
            )
    print(f"{'best of each count':<28}{'bare/s':>8}{'kind/s':>8}{'kind/bare':>11}")
    for count, best in per_count.items():
        b, o = best["bare"]["images_per_s"], best["offload"]["images_per_s"]
        print(f"{f'{count} processes per side':<28}{b:>8.1f}{o:>8.1f}{o / b:>11.2f}")
    print(f"{'best of each side':<28}{'images/s':>8}{'ratio':>8}")
    for label, figure, ratio_shown in (
        ("bare Pillow draft loop", bare, 1.0),
        ("thumbnail kind", offload, ratio),
    ):
        name = f"{label} ({figure['processes']})"
        print(f"{name:<28}{figure['images_per_s']:>8.1f}{ratio_shown:>8.2f}")
    print(f"budget: thumbnails >= 0.8x the bare loop: {'met' if ratio >= 0.8 else 'MISSED'}")
    path = results_write(
        "thumbnails",
        {"n": args.n, "processes": counts, "bare": bare, "offload": offload,
         "ratio": ratio,
         "per_count": {str(c): {**best, "rounds": [{"bare": b, "offload": o} for b, o in runs[c]]}
                       for c, best in per_count.items()},
         "budgets": {"thumbnails_0.8x_bare_loop": ratio >= 0.8}},
    )  # fmt: skip
    print(f"written {path}")


if __name__ == "__main__":
    main()
