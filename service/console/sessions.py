"""Console sessions: an API key is exchanged once for an opaque session token.

The browser keeps only the token (an HttpOnly, SameSite=Strict cookie); the
server keeps the session in the database (table ``console_sessions``), filed
under the SHA-256 of the token, with the digest of the API key the session was
opened with, never the key. Sessions therefore survive a restart and are shared
by every API process (``mlledger serve --workers N``, or several hosts on one
PostgreSQL). Every request checks again that this key is not revoked and that
its principal is still active, and reads the principal's roles anew, so a
revocation or a role change applies to open sessions at once. Sessions end on
sign-out, after ``idle_seconds`` without a request, or ``max_age_seconds`` in all.

So that a page view is not a database write, a request records its time as the
session's ``last_seen`` only when the recorded one is ``touch_seconds`` old or
older. The recorded time thus lags the last request by less than
``touch_seconds``, and a session ends between ``idle_seconds - touch_seconds``
and ``idle_seconds`` after its last request: never later than ``idle_seconds``.
Times are wall-clock epoch seconds, so every process needs a synchronised clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from domain.errors import Unauthenticated
from service.application.auth import Caller, authenticate_digest
from service.application.ledger import Ledger
from service.store.tables import console_sessions

IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 8 * 60 * 60
MAX_SESSIONS = 10_000
TOUCH_SECONDS = 30.0

_t = console_sessions.c


@dataclass(frozen=True)
class Session:
    """One signed-in browser."""

    principal_id: str
    key_digest: str
    csrf_token: str
    opened_at: float
    last_seen: float
    """When a request of this session was last recorded (see ``touch_seconds``)."""


def _slot(token: str) -> str:
    """Sessions are filed under a hash of their token, so the table holds no usable token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """Open sessions in the database, with idle and absolute expiry and a cap on their number.

    ``engine`` reads; ``writer`` opens, touches and ends sessions (the services'
    ``writer_engine``, whose SQLite transactions queue for the write lock instead
    of failing to upgrade a read lock). Expired rows are purged when a session
    opens, and a session found expired is deleted there and then. When
    ``max_sessions`` are open, opening one more ends the least recently seen
    (as recorded, so to within ``touch_seconds``).
    """

    def __init__(
        self,
        engine: Engine,
        writer: Engine,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        touch_seconds: float = TOUCH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= touch_seconds < idle_seconds:
            raise ValueError("touch_seconds must be at least 0 and less than idle_seconds")
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.max_sessions = max_sessions
        self.touch_seconds = touch_seconds
        self._engine = engine
        self._writer = writer
        self._clock = clock

    def __len__(self) -> int:
        """How many sessions are live now."""
        with self._engine.connect() as conn:
            live = sa.select(sa.func.count()).select_from(console_sessions).where(~self._expired(self._clock()))
            return int(conn.execute(live).scalar_one())

    def open(self, principal_id: str, key_digest: str) -> tuple[str, Session]:
        """A new session and its token (the token is given to the browser, once)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(principal_id, key_digest, secrets.token_urlsafe(32), now, now)
        with self._writer.begin() as conn:
            conn.execute(console_sessions.delete().where(self._expired(now)))
            self._make_room(conn)
            conn.execute(
                console_sessions.insert().values(
                    slot=_slot(token),
                    principal_id=principal_id,
                    key_digest=key_digest,
                    csrf_token=session.csrf_token,
                    opened_at=now,
                    last_seen=now,
                )
            )
        return token, session

    def find(self, token: str | None) -> Session | None:
        """The live session of ``token`` (recording this request, see ``touch_seconds``), or None."""
        if not token:
            return None
        now = self._clock()
        slot = _slot(token)
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(_t.principal_id, _t.key_digest, _t.csrf_token, _t.opened_at, _t.last_seen).where(
                    _t.slot == slot
                )
            ).one_or_none()
        if row is None:
            return None
        session = Session(*row)
        if now - session.last_seen > self.idle_seconds or now - session.opened_at > self.max_age_seconds:
            self._delete(slot)
            return None
        if now - session.last_seen >= self.touch_seconds:
            with self._writer.begin() as conn:
                # Another process may have recorded a later request meanwhile; never go back in time.
                conn.execute(console_sessions.update().where(_t.slot == slot, _t.last_seen < now).values(last_seen=now))
            session = Session(session.principal_id, session.key_digest, session.csrf_token, session.opened_at, now)
        return session

    def close(self, token: str | None) -> None:
        """End the session of ``token`` (nothing if there is none)."""
        if token:
            self._delete(_slot(token))

    def close_all_of(self, key_digest: str) -> int:
        """End every session opened with the key of ``key_digest``; return how many."""
        with self._writer.begin() as conn:
            rows = conn.execute(sa.select(_t.slot, _t.key_digest)).all()
            slots = [slot for slot, digest in rows if hmac.compare_digest(digest, key_digest)]
            if slots:
                conn.execute(console_sessions.delete().where(_t.slot.in_(slots)))
        return len(slots)

    def _expired(self, now: float) -> sa.ColumnElement[bool]:
        return sa.or_(_t.last_seen < now - self.idle_seconds, _t.opened_at < now - self.max_age_seconds)

    def _make_room(self, conn: Connection) -> None:
        """Delete the least recently seen sessions so that one more fits under ``max_sessions``."""
        excess = int(conn.execute(sa.select(sa.func.count()).select_from(console_sessions)).scalar_one())
        excess -= self.max_sessions - 1
        if excess > 0:
            oldest = sa.select(_t.slot).order_by(_t.last_seen, _t.slot).limit(excess)
            conn.execute(console_sessions.delete().where(_t.slot.in_(oldest)))

    def _delete(self, slot: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(console_sessions.delete().where(_t.slot == slot))


def caller_of(ledger: Ledger, session: Session) -> Caller:
    """The session's principal as it is now, or :class:`Unauthenticated` if its key no longer works.

    The same checks as authenticating a bearer key (:func:`service.application.auth.authenticate_digest`),
    starting from the digest the session recorded, and the key must still belong
    to the principal the session was opened for.
    """
    caller = authenticate_digest(ledger, session.key_digest)
    if caller.id != session.principal_id:
        raise Unauthenticated("the API key of this session belongs to another principal")
    return caller


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the expected one."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
