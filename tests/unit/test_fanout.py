"""The in-memory fan-out of one web process, without a broker: matching, overflow, cleanup."""

import asyncio

import pytest

from jobs.fanout import OVERFLOW, RESYNC, Hub


@pytest.fixture
def hub(monkeypatch):
    hub = Hub()
    monkeypatch.setattr(hub, "source_start", lambda: None)
    return hub


def _event(job_id="j1", version=2, owner_id=7, status="running"):
    return {"job_id": job_id, "kind": "k", "status": status, "version": version,
            "owner_id": owner_id, "progress": {}, "at": "now"}  # fmt: skip


def test_events_reach_only_matching_subscribers_without_the_owner_id(hub):
    async def scenario():
        by_job = hub.subscribe(job_ids=["j1"])
        by_owner = hub.subscribe(owner_id=7)
        everything = hub.subscribe(everything=True)
        other = hub.subscribe(job_ids=["j2"], owner_id=8)
        hub.dispatch(_event())  # from the source thread in real life
        await asyncio.sleep(0)
        got = [await s.get(1) for s in (by_job, by_owner, everything)]
        nothing = await other.get(0.05)
        return got, nothing

    got, nothing = asyncio.run(scenario())
    assert all(event["job_id"] == "j1" and "owner_id" not in event for event in got)
    assert nothing is None


def test_watch_adds_a_job_and_close_removes_every_index_entry(hub):
    async def scenario():
        socket = hub.subscribe()
        socket.watch("j1")
        socket.watch("j2")
        owner = hub.subscribe(owner_id=3)
        assert hub.stats()["subscribers"] == 2
        assert hub.stats()["watched_jobs"] == 2
        hub.dispatch(_event(job_id="j2"))
        event = await socket.get(1)
        socket.close()
        owner.close()
        return event

    assert asyncio.run(scenario())["job_id"] == "j2"
    stats = hub.stats()
    assert (stats["subscribers"], stats["watched_jobs"], stats["watched_owners"]) == (0, 0, 0)


def test_a_slow_subscriber_is_told_to_go_instead_of_growing(hub, settings):
    settings.OFFLOAD_EVENTS_SUBSCRIBER_BUFFER = 5

    async def scenario():
        slow = hub.subscribe(job_ids=["j1"])
        for version in range(2, 20):
            hub.dispatch(_event(version=version))
        await asyncio.sleep(0.01)
        return [await slow.get(0.05) for _ in range(2)], slow

    (first, second), slow = asyncio.run(scenario())
    assert first is OVERFLOW
    assert second is None
    assert slow.closed


def test_resync_reaches_everyone(hub):
    async def scenario():
        subscribers = [hub.subscribe(job_ids=["a"]), hub.subscribe(owner_id=1)]
        hub.resync()
        return [await s.get(1) for s in subscribers]

    assert asyncio.run(scenario()) == [RESYNC, RESYNC]
