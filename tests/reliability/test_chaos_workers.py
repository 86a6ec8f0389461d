"""Worker crashes: children SIGKILLed every second, the whole worker killed and restarted.
Every accepted job reaches a final state with its effect applied exactly once."""

import time

import pytest

from tests.reliability.harness import (
    Repeater,
    all_final,
    chaos_jobs,
    child_killer,
    classify,
    jobs_submit,
)
from tests.support import Worker, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def isolated(worker_paused):
    """Only the worker under test runs jobs."""
    return


def _run_with_child_kills(log_dir, *, env) -> "object":
    victim = Worker(log_dir=log_dir, queues="default", env=env).start()
    started = time.monotonic()
    try:
        ids = jobs_submit(chaos_jobs())
        with Repeater(1.0, child_killer(victim)) as killer:
            wait_for(lambda: all_final(ids), timeout=600, interval=0.5, what="all jobs final")
    finally:
        victim.stop()
    outcome = classify(ids, started=started)
    outcome.kills = killer.count
    return outcome


def test_children_killed_every_second_lose_and_repeat_nothing(isolated, log_dir):
    outcome = _run_with_child_kills(log_dir, env=process_env())

    print(outcome.table("child kills"))
    assert outcome.kills >= 3
    assert outcome.lost == 0
    assert outcome.duplicated == 0


def test_the_harness_sees_losses_without_reject_on_worker_lost(isolated, log_dir):
    env = process_env(OFFLOAD_TEST_REJECT_ON_WORKER_LOST="0")
    outcome = _run_with_child_kills(log_dir, env=env)

    print(outcome.table("control: reject_on_worker_lost off"))
    assert outcome.kills >= 3
    assert outcome.lost > 0
    assert outcome.duplicated == 0


def test_whole_worker_killed_and_restarted_in_a_loop_loses_nothing(isolated, log_dir):
    started = time.monotonic()
    ids = jobs_submit(chaos_jobs())
    kills = 0
    victim = Worker(log_dir=log_dir, queues="default").start()
    try:
        while not all_final(ids) and time.monotonic() - started < 600:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and not all_final(ids):
                time.sleep(0.1)
            if all_final(ids):
                break
            victim.kill()
            kills += 1
            victim = Worker(log_dir=log_dir, queues="default").start()
    finally:
        if victim.process is not None:
            victim.stop()
    outcome = classify(ids, started=started)
    outcome.kills = outcome.restarts = kills

    print(outcome.table("whole-worker kills"))
    assert kills >= 2
    assert outcome.lost == 0
    assert outcome.duplicated == 0
