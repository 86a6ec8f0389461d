"""`python manage.py jobs …`: submit, follow and manage jobs from a shell or a script.

    jobs submit KIND [--param k=v …] [--params JSON] [--priority N] [--wait [--timeout S]]
    jobs status ID | jobs watch ID [--timeout S] | jobs list [--status S] [--kind K]
    jobs cancel ID | jobs retry ID | jobs requeue-dead [--kind K] | jobs stats [--hours H]

Without `--user` the command acts as the operator at the shell: it sees every job and submits
system jobs (no owner). Exit codes: 0 succeeded, 1 failed or dead, 2 bad usage, 3 cancelled,
4 no such job, 5 still unfinished when --wait / watch gave up.
"""

import json
import sys
from argparse import ArgumentParser
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from jobs import cli, selectors, services
from jobs.errors import OffloadError
from jobs.models import Job, JobStatus

# Sees every job, as staff do; owns nothing (submits are system jobs).
OPERATOR = SimpleNamespace(is_staff=True, is_authenticated=True, pk=None)


class Command(BaseCommand):
    help = "Submit, follow and manage jobs. `manage.py jobs SUBCOMMAND --help` for each."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--user", help="act as this user (default: the operator)")
        sub = parser.add_subparsers(dest="action", required=True, metavar="SUBCOMMAND")

        submit = sub.add_parser("submit", help="submit one job")
        submit.add_argument("kind")
        submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        submit.add_argument("--params", help="params as one JSON object")
        submit.add_argument("--priority", type=int)
        submit.add_argument("--idempotency-key")
        submit.add_argument("--wait", action="store_true", help="follow it until it ends")
        submit.add_argument("--timeout", type=float)

        for name, text in (("status", "show one job"), ("cancel", "cancel"), ("retry", "requeue")):
            sub.add_parser(name, help=text).add_argument("job_id")
        watch = sub.add_parser("watch", help="live progress bar until the job ends")
        watch.add_argument("job_id")
        watch.add_argument("--timeout", type=float)

        listing = sub.add_parser("list", help="newest jobs first")
        listing.add_argument("--status", help="comma-separated statuses")
        listing.add_argument("--kind")
        listing.add_argument("--limit", type=int, default=20)

        requeue = sub.add_parser("requeue-dead", help="requeue dead jobs")
        requeue.add_argument("--kind")

        stats = sub.add_parser("stats", help="jobs per kind and status")
        stats.add_argument("--hours", type=float, default=24.0)

    def handle(self, *args: Any, action: str, user: str | None, **options: Any) -> None:
        actor = self._actor(user)
        handler = getattr(self, "do_" + action.replace("-", "_"))
        try:
            code = handler(actor, **options)
        except OffloadError as exc:
            details = f" {json.dumps(exc.fields, sort_keys=True)}" if exc.fields else ""
            code = cli.EXIT_NOT_FOUND if exc.status == 404 else cli.EXIT_USAGE
            raise CommandError(exc.message + details, returncode=code) from exc
        if code:
            sys.exit(code)

    def _actor(self, username: str | None) -> Any:
        if username is None:
            return OPERATOR
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}.", returncode=cli.EXIT_USAGE) from None

    def _follow(self, actor: Any, job: Job, timeout: float | None) -> int:
        job = cli.watch(
            lambda: selectors.job_get(user=actor, job_id=job.id),
            out=self.stdout._out,
            tty=self.stdout.isatty(),
            timeout=timeout,
        )
        return cli.exit_code(job.status)

    def do_submit(
        self,
        actor: Any,
        *,
        kind: str,
        param: list[str],
        params: str | None,
        priority: int | None,
        idempotency_key: str | None,
        wait: bool,
        timeout: float | None,
        **_: Any,
    ) -> int:
        try:
            values = json.loads(params) if params else {}
            values.update(cli.param_parse(param))
        except (ValueError, AttributeError) as exc:
            raise OffloadError(f"Bad params: {exc}") from exc
        owner = None if actor is OPERATOR else actor
        job, created = services.job_submit(
            spec=services.JobSpec(kind=kind, params=values, priority=priority),
            owner=owner,
            idempotency_key=idempotency_key,
        )
        self.stdout.write(f"{job.id} {'submitted' if created else 'already submitted'}")
        return self._follow(actor, job, timeout) if wait else cli.EXIT_OK

    def do_status(self, actor: Any, *, job_id: str, **_: Any) -> int:
        job = selectors.job_get(user=actor, job_id=job_id)
        self.stdout.write(cli.job_detail(job))
        return cli.exit_code(job.status) if job.is_finished else cli.EXIT_OK

    def do_watch(self, actor: Any, *, job_id: str, timeout: float | None, **_: Any) -> int:
        return self._follow(actor, selectors.job_get(user=actor, job_id=job_id), timeout)

    def do_list(
        self, actor: Any, *, status: str | None, kind: str | None, limit: int, **_: Any
    ) -> int:
        jobs = selectors.jobs_list(user=actor, status=status, kind=kind)[: max(limit, 1)]
        for job in jobs:
            self.stdout.write(cli.job_line(job))
        return cli.EXIT_OK

    def do_cancel(self, actor: Any, *, job_id: str, **_: Any) -> int:
        job = services.job_cancel(job=selectors.job_get(user=actor, job_id=job_id))
        self.stdout.write(f"{job.id} {job.status}")
        return cli.EXIT_OK

    def do_retry(self, actor: Any, *, job_id: str, **_: Any) -> int:
        job = services.job_retry(job=selectors.job_get(user=actor, job_id=job_id))
        self.stdout.write(f"{job.id} {job.status}")
        return cli.EXIT_OK

    def do_requeue_dead(self, actor: Any, *, kind: str | None, **_: Any) -> int:
        jobs = selectors.jobs_requeueable(user=actor, status=JobStatus.DEAD, kind=kind)
        requeued = services.jobs_requeue(jobs=list(jobs[: services.REQUEUE_MAX]))
        self.stdout.write(f"{len(requeued)} dead job(s) requeued")
        return cli.EXIT_OK

    def do_stats(self, actor: Any, *, hours: float, **_: Any) -> int:
        since = timezone.now() - timedelta(hours=hours)
        rows = (
            selectors.jobs_visible(user=actor)
            .filter(created_at__gte=since)
            .values_list("kind", "status")
            .annotate(n=Count("id"))
            .order_by("kind", "status")
        )
        self.stdout.write(f"jobs created in the last {hours:g} h")
        self.stdout.write(cli.table(rows, ("kind", "status", "jobs")))
        return cli.EXIT_OK
