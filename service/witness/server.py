"""The witness's HTTP interface (C2SP tlog-witness).

``POST /add-checkpoint`` cosigns a checkpoint that extends what the witness saw
(200 with the cosignature line) or refuses with the status the spec names: 400
malformed, 403 not signed by the log, 404 unknown origin, 409 old size is not
the latest cosigned (body: that size, ``text/x.tlog.size``), 422 inconsistent.
``GET /<sha256 hex of origin>/checkpoint`` serves the latest cosigned
checkpoint. The check, the durable write and the signature happen under one
lock, so two submissions never roll the state back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from domain.integrity.checkpoint import CheckpointFormatError, parse_verifier_key
from domain.integrity.cosignature import parse_add_checkpoint, sign_cosignature
from domain.integrity.witness import (
    CheckpointNotTrusted,
    InconsistentCheckpoint,
    LogKey,
    MalformedSubmission,
    OldSizeMismatch,
    UnknownLog,
    WitnessRefusal,
    check_add_checkpoint,
)
from service.witness.state import CosignedCheckpoint, WitnessIdentity, WitnessState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
_STATUS: dict[type[WitnessRefusal], HTTPStatus] = {
    MalformedSubmission: HTTPStatus.BAD_REQUEST,
    CheckpointNotTrusted: HTTPStatus.FORBIDDEN,
    UnknownLog: HTTPStatus.NOT_FOUND,
    OldSizeMismatch: HTTPStatus.CONFLICT,
    InconsistentCheckpoint: HTTPStatus.UNPROCESSABLE_ENTITY,
}


def parse_log_option(value: str) -> tuple[str, LogKey]:
    """``ORIGIN=VKEY`` (or a bare vkey, whose key name is the origin) -> (origin, key)."""
    origin, sep, vkey = value.rpartition("=")
    name, public_key = parse_verifier_key(vkey.strip())
    return (origin.strip() if sep else name), LogKey(name, public_key)


def read_log_config(path: Path) -> list[tuple[str, LogKey]]:
    """The ``log <vkey> [<url>]`` lines of a tlog-policy style file; the key name is the origin."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#") or words[0] != "log":
            continue
        if len(words) not in (2, 3):
            raise CheckpointFormatError(f"{path}:{number}: expected 'log <vkey> [<url>]'")
        name, public_key = parse_verifier_key(words[1])
        found.append((name, LogKey(name, public_key)))
    return found


class Witness:
    """The witness: trusted log keys, its identity and its state, with the add-checkpoint decision."""

    def __init__(self, identity: WitnessIdentity, state: WitnessState, logs: list[tuple[str, LogKey]]) -> None:
        self.identity = identity
        self.state = state
        self.trusted: dict[str, list[LogKey]] = {}
        for origin, key in logs:
            self.trusted.setdefault(origin, []).append(key)
        self._lock = threading.Lock()

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line for a valid submission; a :class:`WitnessRefusal` otherwise."""
        try:
            request = parse_add_checkpoint(body)
        except CheckpointFormatError as exc:
            raise MalformedSubmission(exc.detail) from exc
        with self._lock:
            origin = request.note.split("\n", 1)[0]
            seen = self.state.logs.get(origin)
            checkpoint = check_add_checkpoint(request, self.trusted, None if seen is None else seen.view)
            body_text = checkpoint.body()
            line = sign_cosignature(body_text, self.identity.name, self.identity.private_key, int(time.time())).line()
            cosigned = request.note + line
            self.state.record(
                checkpoint.origin, CosignedCheckpoint(checkpoint.tree_size, checkpoint.root_hash, cosigned)
            )
            return line

    def latest(self, origin_hash: str) -> str | None:
        """The latest cosigned checkpoint of the origin whose SHA-256 hex is ``origin_hash``."""
        for origin, cosigned in self.state.logs.items():
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                return cosigned.note
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mlledger-witness"
    witness: Witness

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s " + format, self.client_address[0], *args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, status: HTTPStatus, title: str, detail: str) -> None:
        problem = {"type": "about:blank", "title": title, "status": int(status), "detail": detail}
        self._send(status, json.dumps(problem).encode(), "application/problem+json")

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._problem(HTTPStatus.NOT_FOUND, "Not found", f"no such endpoint {self.path[:100]!r}")
            return
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            self.close_connection = True
            self._problem(HTTPStatus.LENGTH_REQUIRED, "Length required", "send a Content-Length")
            return
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._problem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Too large", f"at most {MAX_BODY_BYTES} bytes")
            return
        body = self.rfile.read(length)
        try:
            line = self.witness.add_checkpoint(body)
        except OldSizeMismatch as exc:
            self._send(HTTPStatus.CONFLICT, f"{exc.latest_size}\n".encode(), "text/x.tlog.size")
        except WitnessRefusal as exc:
            self._problem(_STATUS[type(exc)], exc.title, exc.detail)
        except Exception:
            log.exception("add-checkpoint failed")
            self._problem(HTTPStatus.SERVICE_UNAVAILABLE, "Unavailable", "the witness could not record the checkpoint")
        else:
            self._send(HTTPStatus.OK, line.encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        note = self.witness.latest(parts[0]) if len(parts) == 2 and parts[1] == "checkpoint" else None
        if note is None:
            self._problem(HTTPStatus.NOT_FOUND, "Not found", "this witness has cosigned no checkpoint of that log")
            return
        self._send(HTTPStatus.OK, note.encode(), "text/plain; charset=utf-8")


def make_server(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server bound to ``host:port`` (port 0: any free port) that serves ``witness``."""
    handler = type("WitnessHandler", (_Handler,), {"witness": witness})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def open_witness(
    state_dir: Path,
    name: str | None,
    logs: list[str],
    config: Path | None,
    key_uri: str | None = None,
    pkcs11_module: str | None = None,
) -> Witness:
    """The witness of ``state_dir`` following the logs given as ``ORIGIN=VKEY`` and in ``config``.

    With ``key_uri`` (RFC 7512) its key is an Ed25519 key in a PKCS#11 token;
    otherwise a key file in ``state_dir``, created on first start.
    """
    from service.common.pkcs11 import DEFAULT_MODULE, open_token_key
    from service.witness.state import identity_with_key, load_or_create_identity

    trusted = [parse_log_option(value) for value in logs]
    if config is not None:
        trusted += read_log_config(config)
    if not trusted:
        raise CheckpointFormatError("a witness needs at least one log: --log ORIGIN=VKEY or --config FILE")
    if key_uri:
        token_key = open_token_key(key_uri, pkcs11_module or DEFAULT_MODULE)
        identity = identity_with_key(state_dir, name, token_key.note_key)
    else:
        identity = load_or_create_identity(state_dir, name)
    return Witness(identity, WitnessState(state_dir), trusted)
