"""Riding out a database restart in the worker.

A lifecycle read or write that meets a dropped connection (PostgreSQL restarting, a
failover) is retried on a fresh connection with backoff for up to OFFLOAD_DB_RETRY_SECONDS,
instead of failing the job or losing its status. Outside a transaction only: inside one the
caller's transaction is already lost and must fail.
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)
T = TypeVar("T")
DB_ERRORS = (OperationalError, InterfaceError)


def db_retry(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    deadline = time.monotonic() + settings.OFFLOAD_DB_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return fn(*args, **kwargs)
        except DB_ERRORS as exc:
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            logger.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
