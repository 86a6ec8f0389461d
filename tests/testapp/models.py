from django.db import models


class Effect(models.Model):
    """What a chaos-test job did: one row per applied effect (job, attempt, worker pid)."""

    job_id = models.UUIDField(db_index=True)
    attempt = models.PositiveIntegerField()
    pid = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"effect of {self.job_id} (attempt {self.attempt})"
