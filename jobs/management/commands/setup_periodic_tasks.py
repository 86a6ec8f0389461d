"""`python manage.py setup_periodic_tasks [--reset]`: write the default schedules."""

from django.core.management.base import BaseCommand

from jobs.schedules.defaults import schedules_setup


class Command(BaseCommand):
    help = (
        "Create the default schedules (cleanup, reaper, ...) idempotently. A schedule edited "
        "in the admin is kept unless --reset."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Overwrite default schedules edited in the admin with the code's defaults.",
        )

    def handle(self, *args, reset: bool = False, **options) -> None:
        for name, outcome in schedules_setup(reset=reset):
            self.stdout.write(f"{name}: {outcome}")
