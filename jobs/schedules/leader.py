"""Beat leader election: one database row (`BeatLease`) names the beat process that sends.

Every beat process calls `BeatLeader.hold()` on each tick. The holder renews its lease once
a third of it has passed; any other process takes the row over only once it has expired
(one conditional UPDATE, so two followers cannot both win), and the token grows by one on
every change of holder. A leader that cannot renew stops sending before its lease runs
out (it counts from the moment it asked, not from when the database answered). A follower
asks every OFFLOAD_BEAT_FOLLOWER_POLL seconds, so a dead leader is replaced within one
lease period plus one poll. A leader that stops cleanly gives the lease up at once.

Expiry times come from the clocks of the beat hosts: keep them in sync (NTP). Even a wrong
clock or two leaders at once cannot run a slot twice: the slot claim (a unique row) is the
guarantee; the election keeps the followers quiet and the load on one process.

OFFLOAD_BEAT_LEASE_SECONDS=0 turns the election off: every beat process sends, and the slot
claims alone keep each slot to one run.
"""

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from jobs.models import BeatLease

logger = logging.getLogger(__name__)
LEASE_NAME = "beat"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class BeatLeader:
    def __init__(self, *, seconds: float, holder: str | None = None, poll: float = 1.0) -> None:
        self.seconds = seconds
        self.holder = holder or holder_name()
        self.poll = min(poll, seconds / 3) if seconds > 0 else poll
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic
        self.leading = False

    def hold(self) -> bool:
        """Whether this process may send now; renews or takes the lease as needed."""
        if self.seconds <= 0:
            return True
        left = self._valid_until - time.monotonic()
        if self.leading and left > self.seconds * 2 / 3:
            return True
        asked = time.monotonic()
        won = self._claim()
        if won:
            self._valid_until = asked + self.seconds
        if won != self.leading:
            if won:
                logger.info("beat %s is the leader now (token %s)", self.holder, self.token)
            else:
                logger.warning("beat %s is no longer the leader", self.holder)
        self.leading = won
        return won

    def _claim(self) -> bool:
        now = timezone.now()
        until = now + timedelta(seconds=self.seconds)
        mine = Q(holder=self.holder)
        updated = (
            BeatLease.objects.filter(name=LEASE_NAME)
            .filter(mine | Q(expires_at__lte=now))
            .update(
                holder=self.holder,
                expires_at=until,
                token=Case(When(mine, then=F("token")), default=F("token") + 1),
            )
        )
        if not updated:
            try:
                with transaction.atomic():
                    BeatLease.objects.create(
                        name=LEASE_NAME, holder=self.holder, token=1, expires_at=until
                    )
            except IntegrityError:
                return False
        self.token = (
            BeatLease.objects.filter(name=LEASE_NAME, holder=self.holder)
            .values_list("token", flat=True)
            .first()
        )
        return self.token is not None

    def release(self) -> None:
        """Give the lease up (on a clean stop) so a follower takes over at once."""
        if self.seconds <= 0 or not self.leading:
            return
        BeatLease.objects.filter(name=LEASE_NAME, holder=self.holder).update(
            expires_at=timezone.now()
        )
        self.leading = False
        logger.info("beat %s gave up the leader lease", self.holder)
