"""Backpressure on the fastest writers: prediction writes wait while the read models are too far behind.

A ``predict:batch`` load on a few cores can append events faster than the
projector applies them; left alone, the Merkle log and the read models then fall
behind without bound (no leaf, no checkpoint, no audit row for longer and
longer). With ``MLLEDGER_WRITE_BRAKE_LAG_SECONDS`` set, a prediction write
(``predict``, ``predict:batch``, ``predictions:log``) first waits, before its
body is read, while the oldest event some read model has not applied yet is
older than that. The writers then go as fast as the read models follow, and
the lag stays near the bound plus the time the read models take for the
writes already past it (the requests in flight). The wait is at the door, not
at the commit: an event's time is taken when the request makes it, so an
event held back after that would look older than the lag it adds. A write that waited
``MLLEDGER_WRITE_BRAKE_MAX_WAIT_SECONDS`` in vain (no projector running, say)
is refused with 503 and ``Retry-After``; nothing of it was written. The lag is
read at most every tenth of a second per API process, shared by its requests.

The bulk writes (``predict:batch``, ``predictions:log``) then also take turns:
at most ``MLLEDGER_WRITE_BRAKE_CONCURRENCY`` of them per API process make and
commit their events at once (:meth:`WriteBrake.writing`), the others wait for a
turn, their events not yet made. Without turns every client's request is in
the server at once: sixteen 1,000-row batches share two cores, each takes
seconds from its first event to its commit, and that time is lag the read
models can never win back. With turns a batch is committed soon after its first
event is made, and a write that waited for its turn checks the lag again first.

Each waiting write holds one of the API process's worker threads. So that one
API key cannot take them all while the brake is on, a key may have at most
``MLLEDGER_WRITE_BRAKE_MAX_WAITING`` writes waiting in a process (at the door or
for a turn); a write past that is refused at once with the same 503, and the
key's clients retry later.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from service.api.errors import ProjectionsBehind
from service.bootstrap import Services
from service.ops.projector import projection_lag
from service.settings import Settings

REFRESH_SECONDS = 0.1
DEFAULT_MAX_WAITING: int = Settings.model_fields["write_brake_max_waiting"].default
DEFAULT_CONCURRENCY: int = Settings.model_fields["write_brake_concurrency"].default


class WriteBrake:
    """Holds writes back while the read models are more than ``lag_seconds`` behind (0: never)."""

    def __init__(
        self,
        services: Services,
        lag_seconds: float,
        max_wait_seconds: float,
        max_waiting: int = DEFAULT_MAX_WAITING,
        refresh: float = REFRESH_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.services = services
        self.lag_seconds = lag_seconds
        self.max_wait_seconds = max_wait_seconds
        self.max_waiting = max_waiting
        self.refresh = refresh
        self.concurrency = concurrency
        self._turns = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._behind = 0.0
        self._waiting: dict[str, int] = {}
        self.waited = 0
        """Writes that had to wait (for /metrics and tests)."""

    @property
    def on(self) -> bool:
        """Whether writes are ever held back."""
        return self.lag_seconds > 0

    @property
    def waiting(self) -> int:
        """Writes waiting at the brake now, over every key."""
        with self._lock:
            return sum(self._waiting.values())

    def behind(self) -> float:
        """Seconds the read models are behind (the oldest unapplied event's age), at most ``refresh`` old."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.refresh:
                self._behind = projection_lag(self.services).oldest_seconds
                self._checked = time.monotonic()
            return self._behind

    def wait(self, key: str) -> None:
        """Return once the read models are within the bound; raise :class:`ProjectionsBehind` after the
        longest wait, or at once when the API key ``key`` (its digest) already has ``max_waiting`` writes
        waiting."""
        if not self.on or self.behind() <= self.lag_seconds:
            return
        with self._waiting_for(key):
            self._wait_within_bound(time.monotonic() + self.max_wait_seconds)

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[None]:
        """A bulk write's turn: held while it makes and commits its events, at most ``concurrency`` at once.

        Waits for a turn (counted among the key's waiting writes), then for the read models
        to be within the bound again; raises :class:`ProjectionsBehind` when the two waits
        together last longer than the longest wait. Nothing is held back when the brake is off.
        """
        if not self.on:
            yield
            return
        deadline = time.monotonic() + self.max_wait_seconds
        if not self._turns.acquire(blocking=False):
            with self._waiting_for(key):
                if not self._turns.acquire(timeout=self.max_wait_seconds):
                    raise ProjectionsBehind(
                        f"{self.concurrency} prediction writes of this API process are being recorded and "
                        f"none ended within {self.max_wait_seconds:g} s; nothing was written: retry later"
                    )
        try:
            self._wait_within_bound(deadline)
            yield
        finally:
            self._turns.release()

    @contextlib.contextmanager
    def _waiting_for(self, key: str) -> Iterator[None]:
        """Count a write of ``key`` as waiting; refuse it at once when the key has ``max_waiting`` already."""
        with self._lock:
            held = self._waiting.get(key, 0)
            if held >= self.max_waiting:
                raise ProjectionsBehind(
                    f"this API key already has {held} writes waiting in this API process (the read models are "
                    f"{self._behind:.1f} s behind, the bound is {self.lag_seconds:g} s); nothing was written: "
                    "retry later"
                )
            self._waiting[key] = held + 1
            self.waited += 1
        try:
            yield
        finally:
            with self._lock:
                left = self._waiting[key] - 1
                if left:
                    self._waiting[key] = left
                else:
                    del self._waiting[key]

    def _wait_within_bound(self, deadline: float) -> None:
        while (behind := self.behind()) > self.lag_seconds:
            if time.monotonic() >= deadline:
                raise ProjectionsBehind(
                    f"the read models are {behind:.1f} s behind (the bound is {self.lag_seconds:g} s) and did not "
                    f"catch up within {self.max_wait_seconds:g} s; nothing was written: retry later (is the "
                    "projector running?)"
                )
            time.sleep(self.refresh)
