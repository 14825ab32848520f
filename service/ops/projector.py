"""The projector loop: keeps read models current and publishes checkpoints.

``mlledger serve`` runs it in a background thread; ``mlledger project --follow``
runs it as its own process (several may run against one PostgreSQL: positions
are locked per batch, so each event is applied once).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from projections import transparency_log as tlog
from service.bootstrap import Services
from service.common.periodic import FirstPass, Next, PeriodicThread
from service.ops.witnessing import submit_to_witnesses

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
    submit_to_witnesses(services)
    return count


class ProjectorThread(PeriodicThread):
    """Projects until stopped: at once while events keep coming, then every ``projection_poll_seconds``.

    The first pass runs at the start; a failed pass is logged and retried
    after the poll interval; :meth:`stop` waits (at most ten seconds) for the
    current pass.
    """

    def __init__(self, services: Services) -> None:
        super().__init__(
            "mlledger-projector",
            services.settings.projection_poll_seconds,
            self._pass,
            failure="projector batch failed; retrying",
            logger=log,
            first_pass=FirstPass.AT_START,
            stop_timeout=10.0,
        )
        self.services = services

    def _pass(self) -> Next:
        return Next.SLEEP if run_once(self.services) == 0 else Next.AT_ONCE
