"""Celery tasks of the webhooks (not job kinds: they only release attempts)."""

from config.celery_app import app
from notifications import services


@app.task(name="notifications.delivery_release", queue="notifications", ignore_result=True)
def delivery_release_task(delivery_id: str) -> None:
    """A short retry wait ended: queue the next attempt."""
    services.delivery_release(delivery_id=delivery_id)
