from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from jobs import delayed, events, lifecycle
        from notifications import metrics, services

        metrics.metrics_install()

        # Terminal job events queue their webhook deliveries, in the process that made them.
        events.row_hook_add(services.deliveries_queue_for_event)
        lifecycle.terminal_returning_add(services.HAS_ENDPOINTS, services.HAS_ENDPOINTS_SQL)
        # Due retries of long waits, and attempts whose job was lost, are released by the
        # leading beat (jobs/delayed.py), not by a periodic task.
        delayed.releaser_register(
            "webhook-deliveries",
            release=services.deliveries_release_due,
            every=settings.OFFLOAD_WEBHOOK_SWEEP_SECONDS,
        )
