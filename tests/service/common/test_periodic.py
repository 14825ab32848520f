"""The periodic background thread: intervals, early wake-up on stop, surviving failures."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from service.common.periodic import FirstPass, Next, PeriodicThread

log = logging.getLogger(__name__)


def test_the_first_pass_waits_for_the_interval_by_default_and_stop_wakes_the_thread() -> None:
    passes: list[float] = []
    thread = PeriodicThread("test-periodic", 30.0, lambda: passes.append(time.monotonic()), failure="x", logger=log)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    thread.stop()
    assert time.monotonic() - started < 5.0  # woken, not left to sleep out 30 s
    assert passes == []
    assert not thread.is_alive()


def test_a_thread_starting_with_a_pass_runs_it_at_once_then_every_interval() -> None:
    ran = threading.Semaphore(0)

    def work() -> None:
        ran.release()

    thread = PeriodicThread("test-periodic", 0.01, work, failure="x", logger=log, first_pass=FirstPass.AT_START)
    thread.start()
    try:
        for _ in range(3):
            assert ran.acquire(timeout=5)
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_a_pass_that_found_work_is_followed_at_once_by_another() -> None:
    passes: list[int] = []
    done = threading.Event()

    def work() -> Next:
        passes.append(len(passes))
        if len(passes) == 3:
            done.set()
            return Next.SLEEP
        return Next.AT_ONCE

    thread = PeriodicThread("test-periodic", 30.0, work, failure="x", logger=log, first_pass=FirstPass.AT_START)
    thread.start()
    try:
        assert done.wait(5)  # three passes without sleeping 30 s between them
    finally:
        thread.stop()
    assert passes == [0, 1, 2]


def test_a_failing_pass_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    second = threading.Event()

    def work() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        second.set()

    thread = PeriodicThread("test-periodic", 0.01, work, failure="the test pass failed", logger=log)
    with caplog.at_level(logging.ERROR, logger=__name__):
        thread.start()
        try:
            assert second.wait(5)
        finally:
            thread.stop()
    assert [r.getMessage() for r in caplog.records if r.name == __name__] == ["the test pass failed"]


def test_stop_lets_the_current_pass_finish_and_runs_no_other() -> None:
    entered, release = threading.Event(), threading.Event()
    passes: list[int] = []

    def work() -> Next:
        passes.append(1)
        entered.set()
        release.wait(5)
        return Next.AT_ONCE

    thread = PeriodicThread("test-periodic", 0.01, work, failure="x", logger=log, first_pass=FirstPass.AT_START)
    thread.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    time.sleep(0.05)
    assert thread.is_alive()  # still in its pass
    release.set()
    stopper.join(5)
    assert not thread.is_alive()
    assert passes == [1]


def test_stopping_a_thread_that_never_started_is_quiet() -> None:
    PeriodicThread("test-periodic", 1.0, lambda: None, failure="x", logger=log).stop()
