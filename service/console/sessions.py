"""Console sessions: an API key is exchanged once for an opaque session token.

The browser keeps only the token (an HttpOnly, SameSite=Strict cookie); the
server keeps, in memory, the digest of the API key the session was opened
with, never the key. Every request checks again that this key is not revoked
and that its principal is still active, and reads the principal's roles anew,
so a revocation or a role change applies to open sessions at once. Sessions
end after ``idle_seconds`` without a request or ``max_age_seconds`` in all,
and when the process restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import Unauthenticated
from service.auth import Caller, authenticate_digest
from service.ledger import Ledger

IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 8 * 60 * 60
MAX_SESSIONS = 10_000


@dataclass
class Session:
    """One signed-in browser."""

    principal_id: str
    key_digest: str
    csrf_token: str
    opened_at: float
    last_seen: float


def _slot(token: str) -> str:
    """Sessions are filed under a hash of their token, so the table holds no usable token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """Open sessions of this process, thread-safe, with idle and absolute expiry."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, principal_id: str, key_digest: str) -> tuple[str, Session]:
        """A new session and its token (the token is given to the browser, once)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(principal_id, key_digest, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._purge(now)
            while len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions, key=lambda slot: self._sessions[slot].last_seen)
                del self._sessions[oldest]
            self._sessions[_slot(token)] = session
        return token, session

    def find(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle clock restarts), or None."""
        if not token:
            return None
        now = self._clock()
        slot = _slot(token)
        with self._lock:
            session = self._sessions.get(slot)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[slot]
                return None
            session.last_seen = now
            return session

    def close(self, token: str | None) -> None:
        """End the session of ``token`` (nothing if there is none)."""
        if token:
            with self._lock:
                self._sessions.pop(_slot(token), None)

    def close_all_of(self, key_digest: str) -> int:
        """End every session opened with the key of ``key_digest``; return how many."""
        with self._lock:
            slots = [slot for slot, s in self._sessions.items() if hmac.compare_digest(s.key_digest, key_digest)]
            for slot in slots:
                del self._sessions[slot]
        return len(slots)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_seconds or now - session.opened_at > self.max_age_seconds

    def _purge(self, now: float) -> None:
        for slot in [slot for slot, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[slot]


def caller_of(ledger: Ledger, session: Session) -> Caller:
    """The session's principal as it is now, or :class:`Unauthenticated` if its key no longer works.

    The same checks as authenticating a bearer key (:func:`service.auth.authenticate_digest`),
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
