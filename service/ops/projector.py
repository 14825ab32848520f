"""The projector loop: keeps read models current and publishes checkpoints.

``mlledger serve`` runs it in a background thread; ``mlledger project --follow``
runs it as its own process (several may run against one PostgreSQL: positions
are locked per batch, so each event is applied once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from domain.integrity.sealing import SealedEvent, parse_timestamp
from projections import transparency_log as tlog
from projections.base import ProjectionRunner
from projections.transparency_log import TransparencyLog
from service.bootstrap import Services
from service.common.periodic import FirstPass, Next, PeriodicThread
from service.ops.witnessing import submit_to_witnesses
from service.settings import Settings

log = logging.getLogger(__name__)


class ProjectsReadModels(Protocol):
    """What projecting the read models other than the Merkle log needs: :class:`Services`, or the
    :class:`~service.bootstrap.ReadModelProjector` of a process that holds no key."""

    @property
    def settings(self) -> Settings: ...
    @property
    def runner(self) -> ProjectionRunner: ...


def signs_checkpoints(only: Collection[str] | None) -> bool:
    """Whether projecting ``only`` (None: every read model) publishes checkpoints, which the ledger key signs."""
    return only is None or TransparencyLog.name in only


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


@dataclass(frozen=True)
class ProjectionLag:
    """How far each read model (the Merkle log included) is behind the event log."""

    position: int
    """The newest notification id of the event log."""
    events: dict[str, int]
    """Per read model: events of the log it has not applied yet."""
    seconds: dict[str, float]
    """Per read model: age of the oldest event it has not applied yet (its ``recorded_at``), 0 when none."""

    @property
    def oldest_seconds(self) -> float:
        """Age of the oldest event some read model has not applied yet (0 when all are current)."""
        return max(self.seconds.values(), default=0.0)


def projection_lag(services: Services, now: datetime | None = None) -> ProjectionLag:
    """Each read model's lag, in events and in age of its oldest unapplied event."""
    now = now or datetime.now(UTC)
    head = services.ledger.position()
    positions = services.runner.positions()
    recorded: dict[int, datetime] = {}
    seconds: dict[str, float] = {}
    for name, position in positions.items():
        if position >= head:
            seconds[name] = 0.0
            continue
        if position not in recorded:
            following = services.ledger.recorder.select_notifications(position + 1, 1)
            envelope = SealedEvent.from_record(following[0].state).envelope_fields()
            recorded[position] = parse_timestamp(str(envelope["recorded_at"]))
        seconds[name] = max(0.0, (now - recorded[position]).total_seconds())
    return ProjectionLag(head, {name: max(0, head - p) for name, p in positions.items()}, seconds)


PASS_BATCHES = 20
"""Batches each projection runs per pass (10,000 events at the default batch size)."""


def log_once(services: Services) -> int:
    """One pass over the Merkle log: a bounded stretch, then a checkpoint if one is due, then the witnesses."""
    count = services.runner.catch_up(TransparencyLog.name, max_batches=PASS_BATCHES)
    checkpoint = publish_checkpoint_if_due(services)
    if checkpoint is not None:
        log.info("checkpoint published at tree size %d", checkpoint.tree_size)
    submit_to_witnesses(services)
    return count


def read_model_names(services: ProjectsReadModels, only: Collection[str] | None = None) -> list[str]:
    """The read models other than the Merkle log (those in ``only`` when given), in the runner's order."""
    return [n for n in services.runner.projections if n != TransparencyLog.name and (only is None or n in only)]


def read_models_once(services: ProjectsReadModels, names: Sequence[str] | None = None) -> int:
    """One pass over the other read models (or ``names``), a bounded stretch each."""
    selected = read_model_names(services) if names is None else names
    return services.runner.catch_up_together(selected, max_batches=PASS_BATCHES)


def run_once(services: Services) -> int:
    """One pass of both: the Merkle log (with its checkpoint and witnesses) first, then the read models."""
    return log_once(services) + read_models_once(services)


class ProjectorThread:
    """Projects until stopped, on two threads: the Merkle log with its checkpoints and witnesses, and the
    other read models. Each runs at once while events keep coming, then every ``projection_poll_seconds``.

    ``only`` limits it to some read models (``transparency_log`` for the log's
    thread, the others for the second): several projector processes, each with
    its own share, then project side by side on as many cores, none waiting on
    another's interpreter lock. The log's thread signs checkpoints, so it needs
    :class:`Services`; the second runs as well on a keyless
    :class:`~service.bootstrap.ReadModelProjector`.

    A pass is bounded (:data:`PASS_BATCHES`) and the log does not wait for the read
    models, so under appends faster than the slowest read model, checkpoints keep
    being published and witnessed. The first passes run at the start; a failed
    pass is logged and retried after the poll interval; :meth:`stop` waits (at
    most ten seconds each) for the current passes.
    """

    def __init__(self, services: ProjectsReadModels, only: Collection[str] | None = None) -> None:
        self.services = services
        poll = services.settings.projection_poll_seconds
        unknown = sorted(set(only or ()) - set(services.runner.projections))
        if unknown or (only is not None and not only):
            known = ", ".join(services.runner.projections)
            raise ValueError(f"no read model named {', '.join(unknown) or '(none given)'}; known: {known}")
        names = read_model_names(services, only)
        loops: list[tuple[str, Callable[[], int], str]] = []
        if signs_checkpoints(only):
            if not isinstance(services, Services):
                raise TypeError("the transparency log's checkpoints are signed: project it with open_services")
            signing = services
            loops.append(("mlledger-projector", lambda: log_once(signing), "transparency log pass"))
        if names:
            loops.append(("mlledger-projector-models", lambda: read_models_once(services, names), "projector batch"))
        self._threads = [
            PeriodicThread(
                name,
                poll,
                lambda work=work: Next.SLEEP if work() == 0 else Next.AT_ONCE,  # type: ignore[misc]
                failure=f"{what} failed; retrying",
                logger=log,
                first_pass=FirstPass.AT_START,
                stop_timeout=10.0,
            )
            for name, work, what in loops
        ]

    @property
    def name(self) -> str:
        """The name of its first thread (the log's, when it projects the log)."""
        return self._threads[0].name

    def start(self) -> None:
        """Start both loops."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both loops, letting their current passes finish."""
        for thread in self._threads:
            thread.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for both loops to end (they end once stopped)."""
        for thread in self._threads:
            thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether either loop still runs."""
        return any(thread.is_alive() for thread in self._threads)
