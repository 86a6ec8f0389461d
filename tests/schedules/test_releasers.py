"""Releasers: due work other apps keep in the database, swept by the leading beat."""

import pytest

from jobs import delayed
from jobs.errors import OffloadError


@pytest.fixture
def releasers(monkeypatch):
    monkeypatch.setattr(delayed, "_releasers", {})
    return delayed


def test_a_releaser_runs_when_due_and_not_before(releasers, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(delayed.time, "monotonic", lambda: clock[0])
    calls = []
    releasers.releaser_register("x", release=lambda: calls.append(clock[0]) or 2, every=30)

    assert releasers.releasers_run() == 2
    clock[0] += 29
    assert releasers.releasers_run() == 0
    clock[0] += 1
    assert releasers.releasers_run() == 2
    assert calls == [100.0, 130.0]


def test_one_failing_releaser_does_not_stop_the_others(releasers):
    def broken() -> int:
        raise OffloadError("broker down")

    releasers.releaser_register("broken", release=broken, every=1)
    releasers.releaser_register("ok", release=lambda: 1, every=1)

    assert releasers.releasers_run() == 1


def test_webhook_deliveries_are_swept_by_the_leading_beat():
    from notifications.services import deliveries_release_due

    registered = delayed._releasers["webhook-deliveries"]
    assert registered.release is deliveries_release_due
