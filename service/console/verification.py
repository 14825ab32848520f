"""The console's "verify ledger" action: ``service.verify.verify_ledger`` run in
the background, one verification at a time, its last result kept for the page.

The verification runs in a child process (``python -m service.console.verify_process``)
started and awaited by a background thread: it forks its own workers, which is
only safe from a single-threaded process, and it keeps the API responsive while
it checks every event. It uses half the cores so the service keeps answering.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.sealing import format_timestamp
from service.settings import Settings

TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of one verification, as the ledger page shows it."""

    started_at: str
    finished_at: str
    started_by: str
    ok: bool
    findings: list[str] = field(default_factory=list)
    """Every finding, the first in ledger order first (empty when ``ok``)."""
    events: int = 0
    aggregates: int = 0
    leaves: int = 0
    unlogged: int = 0
    checkpoints: int = 0
    keys: int = 0
    seconds: float = 0.0
    latest_checkpoint: str | None = None


@dataclass(frozen=True)
class Running:
    """A verification under way."""

    started_at: str
    started_by: str


def _now() -> str:
    return format_timestamp(datetime.now(UTC))


def verification_workers() -> int:
    """Worker processes for a verification started from the console: half the cores."""
    return max(1, (os.cpu_count() or 2) // 2)


class VerificationJob:
    """Starts verifications in the background and remembers the last result."""

    def __init__(self, timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._running: Running | None = None
        self._last: VerificationResult | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> Running | None:
        """The verification under way, if any."""
        with self._lock:
            return self._running

    @property
    def last(self) -> VerificationResult | None:
        """The result of the last finished verification, if any."""
        with self._lock:
            return self._last

    def start(self, settings: Settings, started_by: str) -> bool:
        """Start a verification unless one is running; True when this call started it."""
        with self._lock:
            if self._running is not None:
                return False
            self._running = Running(_now(), started_by)
            running = self._running
            self._thread = threading.Thread(
                target=self._run, args=(settings, running), name="mlledger-console-verify", daemon=True
            )
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> VerificationResult | None:
        """Wait for the running verification (if any) and return the last result."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.last

    def _run(self, settings: Settings, running: Running) -> None:
        try:
            result = self._verify(settings, running)
        except Exception as exc:  # the page must learn why, whatever went wrong
            result = VerificationResult(running.started_at, _now(), running.started_by, False,
                                        [f"the verification could not run: {type(exc).__name__}: {exc}"])
        with self._lock:
            self._last = result
            self._running = None

    def _verify(self, settings: Settings, running: Running) -> VerificationResult:
        completed = subprocess.run(
            [sys.executable, "-m", "service.console.verify_process", str(verification_workers())],
            input=settings.model_dump_json(exclude={"admin_api_key"}),
            capture_output=True,
            text=True,
            timeout=self.timeout_seconds,
            check=False,
        )
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"exit status {completed.returncode}: {tail}")
        report: dict[str, Any] = json.loads(lines[-1])
        return VerificationResult(started_at=running.started_at, finished_at=_now(),
                                  started_by=running.started_by, **report)
