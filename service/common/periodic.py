"""Background work that runs every few seconds until the process stops it.

``mlledger serve`` keeps read models current (the projector), computes
model reports and checks drift in the background. Each is one function run
on a daemon thread, again and again: a pass that fails is logged and the next
one tries again, and stopping wakes the thread at once instead of letting it
sleep out its interval.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable


class FirstPass(enum.Enum):
    """When the first pass runs."""

    AT_START = "at start"  # then after each interval (the projector: read models current from the start)
    AFTER_INTERVAL = "after interval"  # the reports and drift checks: nothing to do at once


class Next(enum.Enum):
    """What a pass asks for: the interval's sleep, or another pass at once."""

    SLEEP = "sleep"
    AT_ONCE = "at once"  # the pass found work: more may be waiting (the projector under load)


class PeriodicThread:
    """Runs ``work`` every ``interval`` seconds on a daemon thread of its own until :meth:`stop`.

    ``work`` returns :attr:`Next.AT_ONCE` to run again without sleeping, or
    :attr:`Next.SLEEP` (or None). An exception it raises is logged with
    ``failure`` on ``logger`` (the owner's) and counts as :attr:`Next.SLEEP`. :meth:`stop` lets the
    current pass finish, then the thread ends without another pass.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Next | None],
        *,
        failure: str,
        logger: logging.Logger,
        first_pass: FirstPass = FirstPass.AFTER_INTERVAL,
        stop_timeout: float = 60.0,
    ) -> None:
        self.interval = interval
        self._work = work
        self._failure = failure
        self._log = logger
        self._first_pass = first_pass
        self._stop_timeout = stop_timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._thread.name

    def start(self) -> None:
        """Start the background loop."""
        self._thread.start()

    def stop(self) -> None:
        """Wake the loop, let its current pass finish, and wait (at most ``stop_timeout`` seconds) for it to end."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._stop_timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop to end (it ends once stopped)."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the loop still runs."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        stopping = self._stopping
        if self._first_pass is FirstPass.AFTER_INTERVAL:
            stopping.wait(self.interval)
        while not stopping.is_set():
            try:
                after = self._work()
            except Exception:
                self._log.exception(self._failure)
                after = Next.SLEEP
            if after is not Next.AT_ONCE:
                stopping.wait(self.interval)
