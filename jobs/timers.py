"""Callbacks due at a time, run by one daemon thread per process.

A worker needs a few of these (the keeper that marks long runs as running, the deadline of
a webhook attempt) on every job, so they must cost next to nothing when they never fire:
scheduling one is a heap push under a lock, and the thread is woken only when the new
callback is due before everything it already waits for. A cancelled callback stays in the
heap until its time and is dropped then.

The thread starts on first use in each process (a forked child starts with none). Callbacks
run on it one after another: one that blocks delays the others of the same `Timers`, so
unrelated duties get a `Timers` each.
"""

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self, name: str, *, slack: float = 0.0) -> None:
        """`slack`: how long after its due time a callback may run, so that callbacks due
        close together are run in one wake-up."""
        self.name = name
        self.slack = slack
        self._pid = 0
        self._start_lock = threading.Lock()
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Timer]] = []
        self._seq = 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        if self._pid != os.getpid():
            self._start()
        timer = Timer(callback)
        with self._cond:
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._seq, timer))
            if self._due[0][2] is timer:
                self._cond.notify()
        return timer

    def _start(self) -> None:
        with self._start_lock:  # the threads of a pool may all arrive first together
            if self._pid != os.getpid():
                self._cond = threading.Condition()
                self._due = []
                threading.Thread(target=self._loop, name=self.name, daemon=True).start()
                self._pid = os.getpid()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = None
                    if self._due:
                        timeout = self._due[0][0] - time.monotonic() + self.slack
                    self._cond.wait(timeout)
                _, _, timer = heapq.heappop(self._due)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:
                logger.exception("%s: a timed callback failed", self.name)
