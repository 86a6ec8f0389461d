"""The HTTP API under load: requests/s and latency of the status read and of submit.

uvicorn serves Offload with the process count the README recommends for the machine
(`WEB_CONCURRENCY`, 2 on 2 cores); bench/loadgen.py, a separate process, drives it over
keep-alive connections in a closed loop. Endpoints, each for `--seconds` after a warm-up:
- `GET /api/v1/jobs/{id}` (200 with the body, ETag and Retry-After);
- the same with a matching `If-None-Match` (304, no body);
- `POST /api/v1/jobs` (202: validate, insert, confirmed publish; no worker runs meanwhile,
  the messages are purged afterwards).
Server, load generator, PostgreSQL and RabbitMQ share the machine's cores. Budget: the
status read at least 1,000 requests/s on 2 cores.

    python bench/api.py [--seconds 10] [--connections 16] [--web-workers 2]
"""

import argparse
import os
import tempfile
from pathlib import Path

from common import (
    ROOT,
    api_token,
    database_prepare,
    django_setup,
    jobs_reset,
    load_run,
    results_write,
    sized,
    web_start,
    worker_stop,
)

BUDGET_READ_PER_S = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=sized(10, 4), help="per endpoint")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2"))
    )
    args = parser.parse_args()

    database_prepare()
    django_setup()
    import httpx
    from django.contrib.auth.models import User

    from jobs.models import Job

    jobs_reset()
    token = api_token("bench-api")
    owner = User.objects.get(username="bench-api")
    job = Job.objects.create(kind="demo.sleep", owner=owner, params={"seconds": 0})
    auth = f"Authorization: Token {token}"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        web, port = web_start(workers=args.web_workers, log=Path(tmp) / "web.log")
        try:
            path = f"/api/v1/jobs/{job.id}"
            first = httpx.get(
                f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Token {token}"}
            )
            etag = first.headers["ETag"]
            common = {"port": port, "connections": args.connections, "seconds": args.seconds,
                      "warmup": 1.0}  # fmt: skip
            results["get_status"] = load_run(path=path, header=[auth], **common)
            results["get_status_304"] = load_run(
                path=path, header=[auth, f"If-None-Match: {etag}"], **common
            )
            results["submit"] = load_run(
                path="/api/v1/jobs", method="POST", body='{"kind": "demo.sleep"}',
                header=[auth], **common,
            )  # fmt: skip
        finally:
            worker_stop(web)
    jobs_reset()
    expected = {"get_status": "200", "get_status_304": "304", "submit": "202"}
    print(f"API under load: uvicorn with {args.web_workers} processes, {args.connections} "
          f"keep-alive connections from a separate process, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'endpoint':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  answers")
    for name, fig in results.items():
        print(f"{name:<16}{fig['requests_per_s']:>9.0f}{fig['p50_ms']:>9.1f}"
              f"{fig['p99_ms']:>9.1f}{fig['max_ms']:>9.1f}  {fig['statuses']}")  # fmt: skip
        if set(fig["statuses"]) != {expected[name]}:
            raise RuntimeError(f"{name}: unexpected answers {fig['statuses']}")
    ratio = round(results["get_status"]["requests_per_s"] / BUDGET_READ_PER_S, 3)
    budgets = {"status_read_1000_per_s": ratio >= 1.0}
    print(f"budget status read >= {BUDGET_READ_PER_S}/s: {ratio:.2f}x, "
          f"{'met' if budgets['status_read_1000_per_s'] else 'MISSED'}")  # fmt: skip
    path = results_write(
        "api",
        {"web_workers": args.web_workers, "connections": args.connections,
         "seconds": args.seconds, **results, "ratio_read_to_budget": ratio, "budgets": budgets},
    )  # fmt: skip
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
