"""HTTP for the SDK: bounded retries with backoff, and read-your-writes.

Retries: a request that never reached the service (the connection was refused
or timed out while connecting) is sent again, whatever it is. A request that
may have reached it (a dropped connection, a read timeout) or that was answered
503 is sent again only when sending it twice is harmless: reads, and writes the
caller marks idempotent (setting tags or a description, a prediction with a
request id, a content-addressed upload). Waits grow exponentially with jitter
and honour ``Retry-After``.

Read-your-writes: the transport remembers the highest ledger position any
write returned and sends it as ``min_position`` on every read, so read models
answer only once they include this client's own writes.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx

from mlledger.errors import LedgerClientError

POSITION_HEADER = "X-Ledger-Position"
READS = frozenset({"GET", "HEAD", "OPTIONS"})
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
MAYBE_SENT = (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError)
BACKOFF_CAP = 8.0


class Transport:
    """One connection pool, one API key, the retry policy and the highest position written."""

    def __init__(self, http: httpx.Client, api_key: str, *, retries: int = 3, backoff: float = 0.25) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.http = http
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.retries = retries
        self.backoff = backoff
        self._position = 0
        self._lock = threading.Lock()

    @property
    def position(self) -> int:
        """The highest ledger position this client's writes returned (0 before the first)."""
        return self._position

    def remember(self, position: int) -> None:
        """Note a position written (reads from now on wait for it)."""
        with self._lock:
            self._position = max(self._position, position)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        wait: float = min(BACKOFF_CAP, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None and retry_after.strip().isdigit():
            wait = max(wait, min(BACKOFF_CAP, float(retry_after)))
        return wait

    def send(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """Send with the retry policy; return the final response (any status)."""
        method = method.upper()
        repeatable = method in READS if idempotent is None else idempotent
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if method in READS and self._position:
            params = dict(kwargs.pop("params", None) or {})
            params.setdefault("min_position", self._position)
            kwargs["params"] = params
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except NEVER_SENT:
                if attempt >= self.retries:
                    raise
            except MAYBE_SENT:
                if not repeatable or attempt >= self.retries:
                    raise
            else:
                if response.status_code != 503 or not repeatable or attempt >= self.retries:
                    self._note_position(response)
                    return response
                response.close()
                time.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            time.sleep(self._delay(attempt, None))
            attempt += 1

    def _note_position(self, response: httpx.Response) -> None:
        header = response.headers.get(POSITION_HEADER)
        if response.status_code < 400 and header is not None and header.isdigit():
            self.remember(int(header))

    def json(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        """Send; return the JSON body or raise :class:`LedgerClientError`."""
        response = self.send(method, path, idempotent=idempotent, **kwargs)
        check(response)
        if not response.content:
            return None
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("position"), int) and method.upper() not in READS:
            self.remember(body["position"])
        return body


def check(response: httpx.Response) -> None:
    """Raise :class:`LedgerClientError` for an error status."""
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:500]}
        if not isinstance(problem, dict):
            problem = {"title": response.reason_phrase, "detail": str(problem)[:500]}
        raise LedgerClientError(response.status_code, problem)
