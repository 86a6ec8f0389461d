from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Kinds register themselves on import; every app may ship a `kinds` module.
        autodiscover_modules("kinds")
        from jobs import metrics, worker  # noqa: F401  (worker connects the Celery signals)

        metrics.metrics_install()
