"""Projections and the runner that feeds them from the notification log.

A projection has a name, the tables it owns and one handler per event type it
cares about. The runner reads notifications in batches after the projection's
position and, in ONE transaction, applies the handlers and advances the position,
so a crash never applies an event twice or skips one. Handlers must be
deterministic (event time, never the wall clock), so dropping a projection's rows
and replaying the log rebuilds them identically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from domain.errors import TamperedEvent
from domain.integrity.sealing import SealedEvent
from projections.tables import projection_positions

log = logging.getLogger(__name__)


class NotificationLike(Protocol):
    """What the runner needs of a notification (eventsourcing's ``Notification``)."""

    @property
    def id(self) -> int: ...
    @property
    def originator_id(self) -> Any: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


SelectNotifications = Callable[[int, int], Sequence[NotificationLike]]


@dataclass(frozen=True)
class ProjectedEvent:
    """A notification with its seal opened: what handlers receive."""

    notification_id: int
    aggregate_id: str
    version: int
    topic: str
    sealed: SealedEvent

    @property
    def hash(self) -> str:
        """The event hash (hex)."""
        return self.sealed.hash

    @cached_property
    def envelope(self) -> dict[str, Any]:
        """The decoded envelope."""
        return self.sealed.envelope_fields()

    @property
    def payload(self) -> dict[str, Any]:
        """The event's own fields."""
        payload: dict[str, Any] = self.envelope["payload"]
        return payload

    @property
    def actor(self) -> str:
        """Who caused the event."""
        return str(self.envelope["actor"])

    @property
    def recorded_at(self) -> str:
        """When the event was recorded (RFC 3339 UTC)."""
        return str(self.envelope["recorded_at"])

    @classmethod
    def from_notification(cls, notification: NotificationLike) -> ProjectedEvent:
        """Open a notification's seal; refuse one whose hash does not match."""
        sealed = SealedEvent.from_record(notification.state)
        if not sealed.hash_matches():
            raise TamperedEvent(f"notification {notification.id}: stored hash does not match the envelope")
        return cls(
            notification_id=notification.id,
            aggregate_id=str(notification.originator_id),
            version=notification.originator_version,
            topic=notification.topic,
            sealed=sealed,
        )


Handler = Callable[[Any, Connection, "ProjectedEvent"], None]


def handler_registry() -> tuple[dict[str, Handler], Callable[..., Callable[[Handler], Handler]]]:
    """A topic -> handler table and the ``@on(*topics)`` decorator that fills it."""
    handlers: dict[str, Handler] = {}

    def on(*topics: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for topic in topics:
                handlers[topic] = handler
            return handler

        return register

    return handlers, on


class Projection:
    """Base class of read models."""

    name: ClassVar[str]
    tables: ClassVar[tuple[sa.Table, ...]] = ()
    topics: ClassVar[tuple[str, ...] | None] = None
    """Topics this projection handles; None means every event."""

    def begin_batch(self, conn: Connection) -> None:
        """Called in the transaction before a batch of events."""

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Apply one event. Subclasses override."""
        raise NotImplementedError

    def end_batch(self, conn: Connection) -> None:
        """Called in the transaction after a batch of events, before the position moves."""

    def reset(self, conn: Connection) -> None:
        """Delete every row this projection owns (for a rebuild)."""
        for table in reversed(self.tables):
            conn.execute(table.delete())


class ProjectionRunner:
    """Feeds projections from the notification log, batch by batch."""

    def __init__(
        self,
        engine: Engine,
        select_notifications: SelectNotifications,
        projections: Sequence[Projection],
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.select_notifications = select_notifications
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size

    def position(self, name: str) -> int:
        """How far the named projection has read."""
        with self.engine.connect() as conn:
            return _read_position(conn, name, lock=False)

    def run_batch(self, projection: Projection) -> int:
        """Apply the next batch to ``projection``; return how many events it read."""
        with self.engine.begin() as conn:
            position = _read_position(conn, projection.name, lock=True)
            notifications = self.select_notifications(position + 1, self.batch_size)
            if not notifications:
                return 0
            projection.begin_batch(conn)
            for notification in notifications:
                if projection.topics is None or notification.topic in projection.topics:
                    projection.handle(conn, ProjectedEvent.from_notification(notification))
            projection.end_batch(conn)
            _write_position(conn, projection.name, notifications[-1].id)
            return len(notifications)

    def catch_up(
        self,
        name: str | None = None,
        progress: Callable[[str, int], None] | None = None,
        *,
        max_batches: int | None = None,
    ) -> int:
        """Run batches until the named projection (or every one) reaches the log's end.

        With ``max_batches``, each projection runs at most that many batches, so
        the call returns even while writers append faster than it projects.
        """
        total = 0
        for projection in self._selected(name):
            batches = 0
            while max_batches is None or batches < max_batches:
                count = self.run_batch(projection)
                batches += 1
                if count == 0:
                    break
                total += count
                if progress is not None:
                    progress(projection.name, count)
        return total

    def rebuild(self, name: str, progress: Callable[[str, int], None] | None = None) -> int:
        """Drop the projection's rows, reset its position and replay the whole log."""
        projection = self._selected(name)[0]
        with self.engine.begin() as conn:
            _read_position(conn, projection.name, lock=True)
            projection.reset(conn)
            _write_position(conn, projection.name, 0)
        return self.catch_up(name, progress)

    def _selected(self, name: str | None) -> list[Projection]:
        if name is None:
            return list(self.projections.values())
        try:
            return [self.projections[name]]
        except KeyError:
            known = ", ".join(sorted(self.projections))
            raise KeyError(f"no projection named {name!r}; known: {known}") from None


def _read_position(conn: Connection, name: str, *, lock: bool) -> int:
    query = sa.select(projection_positions.c.position).where(projection_positions.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    position = conn.execute(query).scalar()
    if position is None:
        if not lock:
            return 0
        try:
            with conn.begin_nested():
                conn.execute(projection_positions.insert().values(name=name, position=0))
        except sa.exc.IntegrityError:
            pass  # another runner created the row first; lock it as usual
        position = conn.execute(query).scalar()
    return int(position or 0)


def _write_position(conn: Connection, name: str, position: int) -> None:
    conn.execute(projection_positions.update().where(projection_positions.c.name == name).values(position=position))
