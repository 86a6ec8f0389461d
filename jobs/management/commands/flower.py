"""`python manage.py flower`: Flower with basic auth from settings (see jobs/flower.py)."""

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from jobs.flower import flower_exec


class Command(BaseCommand):
    help = "Run Flower (Celery's monitor) with basic auth from settings; refuses without it."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            flower_exec()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
