"""Offload's beat scheduler: django-celery-beat's DatabaseScheduler (schedules are rows,
edited in the admin) with three changes.

1. Leader election (jobs/schedules/leader.py): only the leader sends; the others wait.
2. Slots instead of `last_run_at`: on each tick the leader computes, for every enabled
   schedule, its latest slot (jobs/schedules/timing.py) and fires it once through
   `schedule_fire`, which claims the slot in the database before anything is sent. A slot
   is fired at most once per process (remembered in memory) and at most once overall (the
   claim). Slots still within their grace are fired oldest first (so a beat that stalled,
   or a new leader, starts them late rather than never); a slot found later than its grace
   is missed, never run late. A schedule's slots
   only move forward: a slot not after its latest claimed one is never fired, so editing
   an interval (which moves the slot grid) cannot squeeze in an extra early run.
3. The delayed-job dispatcher (jobs/delayed.py) runs on the same tick.

Run it with `celery -A config beat` (CELERY_BEAT_SCHEDULER names this class).
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from jobs import delayed
from jobs.schedules import services, timing
from jobs.schedules.leader import BeatLeader

logger = logging.getLogger(__name__)
# Most slots of one schedule fired in one tick (a beat that stalled within the grace).
CATCH_UP_MAX = 20
# Most batches of due delayed jobs released in one tick.
RELEASE_PASSES = 10


class OffloadScheduler(DatabaseScheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.leader = BeatLeader(
            seconds=settings.OFFLOAD_BEAT_LEASE_SECONDS,
            poll=settings.OFFLOAD_BEAT_FOLLOWER_POLL,
        )
        self._fired: dict[str, datetime] = {}
        super().__init__(*args, **kwargs)

    @property
    def schedule(self) -> dict:
        # django-celery-beat takes its change baseline only at the second read, so an edit
        # made between the first two reads would wait for the 5-minute full sync.
        if self._initial_read:
            self._last_timestamp = self.Changes.last_change()
        return super().schedule

    def install_default_entries(self, data: Any) -> None:
        # Celery's own `celery.backend_cleanup` is replaced by the cleanup kind, which also
        # deletes old task results (in batches).
        return

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = settings.OFFLOAD_DISPATCH_INTERVAL
        try:
            if not self.leader.hold():
                return self.leader.poll
            for _ in range(RELEASE_PASSES):
                if delayed.jobs_release_due() < delayed.RELEASE_BATCH:
                    break
            delayed.releasers_run()
            self.slots_fire(now=timezone.now())
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("beat tick failed (database): %s", exc)
            close_old_connections()
            return max(interval, 1.0)
        return interval

    def slots_fire(self, *, now: datetime) -> int:
        """Fire every slot of every schedule that is due, not fired yet and still within its
        grace, oldest first; returns how many slots this call claimed."""
        fired = 0
        for entry in list(self.schedule.values()):
            task = entry.model
            if not self._runnable(task, now):
                continue
            latest = timing.slot_latest(task, now)
            if latest is None or self._fired.get(task.name) == latest:
                continue
            for due_at in self._due_slots(task, now, latest):
                slot = services.schedule_fire(
                    task=task, due_at=due_at, holder=self.leader.holder, now=now
                )
                if slot is not None:
                    fired += 1
                    if task.one_off:
                        self._finish_one_off(task)
                        break
            # Only once every due slot was handled: after a database error the next tick
            # tries again (the claims keep that from running anything twice).
            self._fired[task.name] = latest
        return fired

    def _due_slots(self, task: PeriodicTask, now: datetime, latest: datetime) -> list[datetime]:
        oldest = now - timing.slot_grace(task)
        if latest < oldest:
            logger.info("slot %s @ %s missed (too late to start)", task.name, latest)
            return []
        # A schedule's slots only move forward: nothing at or before its last claimed slot,
        # and nothing due before the schedule was created or last edited.
        last = services.slot_last(name=task.name)
        after = oldest - timedelta(microseconds=1)
        if task.date_changed is not None:
            after = max(after, task.date_changed - timedelta(microseconds=1))
        if last is not None:
            after = max(after, last)
        if last is not None and latest <= last:
            logger.info("slot %s @ %s was claimed already; nothing sent", task.name, latest)
            return []
        return timing.slots_between(task, after=after, until=now, limit=CATCH_UP_MAX)

    def _runnable(self, task: PeriodicTask, now: datetime) -> bool:
        if not task.enabled:
            return False
        return task.expires is None or now < task.expires

    def _finish_one_off(self, task: PeriodicTask) -> None:
        PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
        PeriodicTasks.update_changed()

    def close(self) -> None:
        try:
            self.leader.release()
        except DatabaseError as exc:
            logger.warning("beat could not give up the leader lease: %s", exc)
        super().close()
