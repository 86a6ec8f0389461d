"""The API tests check what a request writes and queues; no worker may run those jobs
meanwhile (an earlier test in the session may have started the shared one)."""

import pytest


@pytest.fixture(autouse=True)
def _queued_stays_queued(no_worker):
    return
