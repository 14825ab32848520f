"""API worker processes, each with a listening socket of its own.

uvicorn's ``--workers`` binds one socket in the supervisor and shares it: every
worker waits on the same accept queue, and whichever wakes first takes the
connection. Under a burst of connections one worker often takes nearly all of
them (15 of 16 clients in ``bench/predict_single.py``) while the others idle.
Here each worker binds the port itself with ``SO_REUSEPORT`` and the kernel
spreads new connections over the workers' sockets by a hash of their
addresses. A worker's socket lives and dies with it: a replacement binds a new
one, and no socket is left listening without a process to accept from it.

uvicorn's supervisor is kept (restarts, signals, health checks); what it hands
each worker is a :class:`OwnSocket`, which becomes a freshly bound listening
socket when the worker process unpickles it.
"""

from __future__ import annotations

import socket
from typing import Any

REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


class CannotListen(Exception):
    """The address cannot be bound (in use, not this machine's, not allowed)."""


def _listening(host: str, port: int, backlog: int) -> list[socket.socket]:
    """A socket of this process listening on ``host:port`` beside the other workers'."""
    sock = _bound(host, port)
    sock.listen(backlog)
    return [sock]


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class OwnSocket(list[socket.socket]):
    """Empty in the supervisor; in each worker that unpickles it, the worker's own listening socket."""

    def __init__(self, host: str, port: int, backlog: int) -> None:
        super().__init__()
        self.address = (host, port)
        self.backlog = backlog

    def __reduce__(self) -> Any:
        return (_listening, (*self.address, self.backlog))


def run_workers(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve the app factory ``app`` from ``workers`` processes, each accepting on a socket of its own.

    The supervisor binds the port first (without listening: no connection is
    ever queued to it), so a port in use fails at once with a clear error.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if not REUSE_PORT:  # pragma: no cover - every platform the project runs on has it
        uvicorn.run(app, factory=True, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=workers, **options)
    try:
        reserved = _bound(host, port)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        Multiprocess(config, sockets=OwnSocket(host, port, config.backlog)).run()
    finally:
        reserved.close()
