"""The console's "verify ledger" action: ``service.ops.verify.verify_ledger`` run in
the background, one verification at a time across every API process, its state
and its result kept in the database (table ``console_verifications``).

Starting inserts a running row in one writer transaction, and only when no live
running row exists; the transaction is serialised (SQLite's ``BEGIN IMMEDIATE``,
a lock on the table on PostgreSQL), so with ``mlledger serve --workers N``, or
several hosts on one PostgreSQL, one verification runs at a time, every page
shows the same state, and the last result survives a restart. The process that
started it refreshes the row's heartbeat every ``heartbeat_seconds`` while it
waits; a running row whose heartbeat is more than ``stale_seconds`` old was
abandoned (its process ended or hangs): the page says so, and it does not block
the next start. Times are wall-clock epoch seconds, so every process needs a
synchronised clock.

The verification runs in a child process (``python -m service.console.verify_process``)
started and awaited by a background thread: it forks its own workers, which is
only safe from a single-threaded process, and it keeps the API responsive while
it checks every event. It uses half the cores so the service keeps answering.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from domain.integrity.sealing import format_timestamp
from projections.tables import json_text
from service.settings import Settings
from service.store.tables import console_verifications

TIMEOUT_SECONDS = 3600.0
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0

_t = console_verifications.c


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
class Unfinished:
    """A verification without a result: under way, or abandoned by its process."""

    started_at: str
    started_by: str
    owner: str
    """The API process that runs it, ``host-pid``."""
    heartbeat_at: str
    """When that process last said it was still waiting for the verification."""


@dataclass(frozen=True)
class VerificationStatus:
    """What the ledger page shows, the same in every API process."""

    running: Unfinished | None
    """The newest verification, when it has no result and its process still reports."""
    abandoned: Unfinished | None
    """The newest verification, when it has no result and its process stopped reporting."""
    last: VerificationResult | None
    """The newest verification that has a result."""


def _timestamp(epoch: float) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch, UTC))


def verification_workers() -> int:
    """Worker processes for a verification started from the console: half the cores."""
    return max(1, (os.cpu_count() or 2) // 2)


class VerificationJob:
    """Starts verifications in the background, one at a time across processes, and reads their state.

    ``engine`` reads; ``writer`` starts, heartbeats and finishes verifications
    (the services' ``writer_engine``, whose SQLite transactions queue for the
    write lock instead of failing to upgrade a read lock).
    """

    def __init__(
        self,
        engine: Engine,
        writer: Engine,
        *,
        timeout_seconds: float = TIMEOUT_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        if not 0 < heartbeat_seconds < stale_seconds:
            raise ValueError("heartbeat_seconds must be more than 0 and less than stale_seconds")
        self.timeout_seconds = timeout_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.owner = f"{socket.gethostname()}-{os.getpid()}"
        self._engine = engine
        self._writer = writer
        self._thread: threading.Thread | None = None

    def status(self) -> VerificationStatus:
        """The newest verification and the newest result, as stored."""
        with self._engine.connect() as conn:
            newest = conn.execute(sa.select(console_verifications).order_by(_t.id.desc()).limit(1)).first()
            finished = conn.execute(
                sa.select(console_verifications).where(_t.finished_at.is_not(None)).order_by(_t.id.desc()).limit(1)
            ).first()
        last = (
            None
            if finished is None
            else VerificationResult(
                started_at=_timestamp(finished.started_at),
                finished_at=_timestamp(finished.finished_at),
                started_by=finished.started_by,
                ok=bool(finished.ok),
                **json.loads(finished.report or "{}"),
            )
        )
        if newest is None or newest.finished_at is not None:
            return VerificationStatus(None, None, last)
        unfinished = Unfinished(
            _timestamp(newest.started_at), newest.started_by, newest.owner, _timestamp(newest.heartbeat_at)
        )
        if newest.heartbeat_at >= time.time() - self.stale_seconds:
            return VerificationStatus(unfinished, None, last)
        return VerificationStatus(None, unfinished, last)

    def start(self, settings: Settings, started_by: str) -> bool:
        """Start a verification unless a live one is running in any process; True when this call started it."""
        now = time.time()
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Starters queue on this lock (readers do not), so two cannot both find no live row.
                conn.execute(sa.text("LOCK TABLE console_verifications IN SHARE ROW EXCLUSIVE MODE"))
            live = conn.execute(
                sa.select(_t.id).where(_t.finished_at.is_(None), _t.heartbeat_at >= now - self.stale_seconds).limit(1)
            ).first()
            if live is not None:
                return False
            row_id = conn.execute(
                console_verifications.insert()
                .values(started_at=now, started_by=started_by, owner=self.owner, heartbeat_at=now)
                .returning(_t.id)
            ).scalar_one()
        self._thread = threading.Thread(
            target=self._run, args=(settings, row_id), name="mlledger-console-verify", daemon=True
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the verification this process started last (if any) to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, settings: Settings, row_id: int) -> None:
        try:
            report = self._verify(settings, row_id)
            ok = bool(report.pop("ok"))
        except Exception as exc:  # the page must learn why, whatever went wrong
            report = {"findings": [f"the verification could not run: {type(exc).__name__}: {exc}"]}
            ok = False
        with self._writer.begin() as conn:
            conn.execute(
                console_verifications.update()
                .where(_t.id == row_id)
                .values(finished_at=time.time(), ok=ok, report=json_text(report))
            )

    def _verify(self, settings: Settings, row_id: int) -> dict[str, Any]:
        with subprocess.Popen(
            [sys.executable, "-m", "service.console.verify_process", str(verification_workers())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                stdout, stderr = self._await(child, settings.model_dump_json(exclude={"admin_api_key"}), row_id)
            except BaseException:
                child.kill()
                raise
        lines = stdout.strip().splitlines()
        if child.returncode != 0 or not lines:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"exit status {child.returncode}: {tail}")
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    def _await(self, child: subprocess.Popen[str], settings_json: str, row_id: int) -> tuple[str, str]:
        """The child's output once it exits, refreshing the heartbeat meanwhile."""
        deadline = time.monotonic() + self.timeout_seconds
        given: str | None = settings_json
        while True:
            try:
                return child.communicate(given, timeout=min(self.heartbeat_seconds, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(child.args, self.timeout_seconds) from None
            given = None  # the rest of the input is still written on the next call
            with self._writer.begin() as conn:
                conn.execute(console_verifications.update().where(_t.id == row_id).values(heartbeat_at=time.time()))
