"""The per-process timer thread behind the keeper and the webhook attempt deadlines."""

import threading

from jobs.timers import Timers
from tests.support import wait_for


def test_callbacks_run_in_due_order_and_cancelled_ones_do_not():
    timers = Timers("test-timers-order")
    ran: list[str] = []
    done = threading.Event()
    timers.call_later(0.15, lambda: ran.append("third"))
    timers.call_later(0.05, lambda: ran.append("first"))
    timers.call_later(0.10, lambda: ran.append("cancelled")).cancel()
    timers.call_later(0.08, lambda: ran.append("second"))
    timers.call_later(0.20, done.set)
    assert done.wait(10)
    assert ran == ["first", "second", "third"]


def test_a_failing_callback_does_not_stop_the_others(caplog):
    timers = Timers("test-timers-failing")
    done = threading.Event()
    timers.call_later(0.0, lambda: 1 / 0)
    timers.call_later(0.01, done.set)
    assert done.wait(10)
    assert "a timed callback failed" in caplog.text


def test_threads_arriving_together_start_one_timer_thread():
    timers = Timers("test-timers-start")
    barrier = threading.Barrier(8)
    ran: list[int] = []

    def schedule(n: int) -> None:
        barrier.wait(timeout=10)
        timers.call_later(0.0, lambda: ran.append(n))

    threads = [threading.Thread(target=schedule, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: len(ran) == 8, timeout=10, what="every callback")
    assert sorted(ran) == list(range(8))
    assert [t.name for t in threading.enumerate()].count("test-timers-start") == 1
