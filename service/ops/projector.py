"""The projector loop: keeps read models current and publishes checkpoints.

``mlledger serve`` runs it in a background thread; ``mlledger project --follow``
runs it as its own process (several may run against one PostgreSQL: positions
are locked per batch, so each event is applied once).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import sqlalchemy as sa

from projections import transparency_log as tlog
from service.bootstrap import Services

log = logging.getLogger(__name__)


def publish_checkpoint_if_due(services: Services, *, force: bool = False) -> tlog.StoredCheckpoint | None:
    """Sign a checkpoint when the log grew enough or long enough ago."""
    settings = services.settings
    now = datetime.now(UTC)
    with services.writer_engine.begin() as conn:
        due = force or tlog.checkpoint_due(
            conn,
            every_events=settings.checkpoint_every_events,
            every_seconds=settings.checkpoint_every_seconds,
            now=now,
        )
        if not due:
            return None
        try:
            with conn.begin_nested():
                return tlog.publish_checkpoint(conn, services.ledger.signer, settings.log_origin, now)
        except sa.exc.IntegrityError:
            return None  # another projector published this size first


def run_once(services: Services) -> int:
    """Catch every projection up and publish a checkpoint if one is due."""
    count = services.runner.catch_up()
    checkpoint = publish_checkpoint_if_due(services)
    if checkpoint is not None:
        log.info("checkpoint published at tree size %d", checkpoint.tree_size)
    return count


class ProjectorThread(threading.Thread):
    """Polls the log and projects until stopped."""

    def __init__(self, services: Services) -> None:
        super().__init__(name="mlledger-projector", daemon=True)
        self.services = services
        self.stopping = threading.Event()
        self.wakeup = threading.Event()

    def run(self) -> None:
        poll = self.services.settings.projection_poll_seconds
        while not self.stopping.is_set():
            try:
                count = run_once(self.services)
            except Exception:
                log.exception("projector batch failed; retrying")
                count = 0
            if count == 0:
                self.wakeup.wait(poll)
                self.wakeup.clear()

    def stop(self) -> None:
        """Ask the loop to finish and wait for it."""
        self.stopping.set()
        self.wakeup.set()
        self.join(timeout=10)
