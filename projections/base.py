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
from concurrent.futures import ThreadPoolExecutor
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
        # SQLite takes one writer at a time: there the projections of a batch run one after another.
        self._pool = (
            ThreadPoolExecutor(max_workers=len(projections), thread_name_prefix="mlledger-projection")
            if engine.dialect.name == "postgresql" and len(projections) > 1
            else None
        )

    def position(self, name: str) -> int:
        """How far the named projection has read."""
        with self.engine.connect() as conn:
            return _read_position(conn, name, lock=False)

    def close(self) -> None:
        """Let the threads that apply batches side by side end (after the batches they are applying)."""
        pool, self._pool = self._pool, None  # a batch after this runs its projections one after another
        if pool is not None:
            pool.shutdown(wait=False)

    def positions(self) -> dict[str, int]:
        """How far each projection has read, in one query."""
        names = list(self.projections)
        t = projection_positions
        with self.engine.connect() as conn:
            stored = dict(conn.execute(sa.select(t.c.name, t.c.position).where(t.c.name.in_(names))).all())
        return {name: int(stored.get(name) or 0) for name in names}

    def run_batch(self, projection: Projection) -> int:
        """Apply the next batch to ``projection``; return how many events it read."""
        with self.engine.begin() as conn:
            position = _read_position(conn, projection.name, lock=True)
            notifications = self.select_notifications(position + 1, self.batch_size)
            return _apply(conn, projection, position, notifications, {})

    def run_batch_together(self, projections: Sequence[Projection]) -> int:
        """Apply the next batch to each of ``projections``; return the events applied, summed over them."""
        return self._next_batch(projections)[0]

    def _next_batch(self, projections: Sequence[Projection]) -> tuple[int, bool]:
        """Apply the next batch to each of ``projections``: (events applied, summed over them; whether the
        log had events after the projection furthest behind).

        The notifications after the projection furthest behind are read once and
        each event's seal is opened once, however many projections handle it. Each
        projection then applies them in its own transaction (skipping those it has
        already applied), on PostgreSQL all at once on threads of their own, so
        one's statements run in the database while another's Python runs.
        """
        ordered = sorted(projections, key=lambda p: p.name)
        with self.engine.connect() as conn:
            start = min(_read_position(conn, p.name, lock=False) for p in ordered)
        notifications = self.select_notifications(start + 1, self.batch_size)
        if not notifications:
            return 0, False
        wanted = set().union(*(p.topics for p in ordered if p.topics is not None))
        every = any(p.topics is None for p in ordered)
        events = {n.id: ProjectedEvent.from_notification(n) for n in notifications if every or n.topic in wanted}

        def apply(projection: Projection) -> int:
            with self.engine.begin() as conn:
                position = _read_position(conn, projection.name, lock=True)
                if position < notifications[0].id - 1:  # reset meanwhile (a rebuild): read from there
                    return _apply(
                        conn, projection, position, self.select_notifications(position + 1, self.batch_size), {}
                    )
                return _apply(conn, projection, position, notifications, events)

        if self._pool is None or len(ordered) == 1:
            return sum(apply(p) for p in ordered), True
        return sum(self._pool.map(apply, ordered)), True

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
        if name is None:  # all of them side by side, each event read and opened once
            return self._catch_up(list(self.projections.values()), progress, max_batches)
        return self._catch_up(self._selected(name), progress, max_batches)

    def catch_up_together(
        self,
        names: Sequence[str],
        progress: Callable[[str, int], None] | None = None,
        *,
        max_batches: int | None = None,
    ) -> int:
        """Like :meth:`catch_up` for several projections at once, batch by batch in one transaction each
        (see :meth:`run_batch_together`); returns the events read, summed over the projections."""
        return self._catch_up([self._selected(name)[0] for name in names], progress, max_batches)

    def _catch_up(
        self,
        projections: list[Projection],
        progress: Callable[[str, int], None] | None,
        max_batches: int | None,
    ) -> int:
        total = 0
        batches = 0
        while projections and (max_batches is None or batches < max_batches):
            # Another projector (a server's thread beside a rebuild) may have applied this batch
            # already: that is not the log's end, so go on until nothing follows.
            count, read = self._next_batch(projections)
            batches += 1
            if not read:
                break
            total += count
            if progress is not None:
                progress(",".join(p.name for p in projections), count)
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


def _apply(
    conn: Connection,
    projection: Projection,
    position: int,
    notifications: Sequence[NotificationLike],
    events: dict[int, ProjectedEvent],
) -> int:
    """Apply the notifications after ``position`` to ``projection`` and move its position; return how many.

    ``events`` holds notifications already opened (shared by projections); others are opened here.
    """
    fresh = [n for n in notifications if n.id > position]
    if not fresh:
        return 0
    topics = projection.topics
    projection.begin_batch(conn)
    for notification in fresh:
        if topics is None or notification.topic in topics:
            event = events.get(notification.id) or ProjectedEvent.from_notification(notification)
            projection.handle(conn, event)
    projection.end_batch(conn)
    _write_position(conn, projection.name, fresh[-1].id)
    return len(fresh)


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table``, set-based; a column a row leaves out gets its default.

    On PostgreSQL the rows stream in with ``COPY``, the cheapest way in: an
    ``executemany`` there still executes the statement once per row. Elsewhere
    (SQLite) it is an ``executemany``, already a loop inside the driver. Rows
    naming different columns go in as separate groups.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for columns, group in groups.items():
        if conn.dialect.name != "postgresql":
            conn.execute(table.insert(), group)
            continue
        quote = conn.dialect.identifier_preparer.quote
        statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        driver: Any = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in group:
                copy.write_row(tuple(row.values()))


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
