"""`python manage.py quickstart`: migrate, create the demo login, run web, worker and beat."""

import io
import os

from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from jobs import flower, quickstart


class Command(BaseCommand):
    help = "Run Offload on this machine: web (uvicorn), a worker and beat, with a demo login."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--host", default=os.environ.get("OFFLOAD_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("OFFLOAD_PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_periodic_tasks", stdout=io.StringIO())
        _, token = quickstart.demo_user_ensure()
        base = f"http://{host}:{port}"
        try:
            flower_login = " / ".join(flower.flower_credentials()[0].split(":", 1))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Offload is starting (SQLite and the filesystem broker under var/).",
                    f"  API docs     {base}/api/docs",
                    f"  Admin        {base}/admin/   (login: {quickstart.DEMO_USERNAME} / "
                    f"{quickstart.DEMO_PASSWORD})",
                    f"  Jobs API     {base}/api/v1/jobs",
                    f"  API token    {token}",
                    f"  Flower       {flower.flower_url()}/   (login: {flower_login})",
                    "",
                    "Try it:",
                    f"  curl -s -X POST {base}/api/v1/jobs -H 'Authorization: Token {token}' \\",
                    "       -H 'Content-Type: application/json' "
                    '-d \'{"kind": "demo.sleep", "params": {"seconds": 3}}\'',
                    "",
                    "Ctrl-C stops everything.",
                    "",
                ]
            )
        )
        self.stdout.flush()
        raise SystemExit(quickstart.services_run(quickstart.services_build(host=host, port=port)))
