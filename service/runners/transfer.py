"""Moving a run's inputs and outputs to and from the ledger, by digest, over the runner API.

One implementation for every place that executes a run away from the service:
a runner outside it (``gateway.HttpGateway``, with its API key) and a Ray job
on a node (``ray_job``, with the run's token only). Downloads are checked
against their SHA-256 before they are used; uploads are checked against the
digest the ledger stored. Transport errors and server errors are retried a few
times with growing waits; a refusal (4xx) is not.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from domain.errors import LedgerError
from service.runners.work import Input, Output, WorkOrder

CHUNK = 1024 * 1024
TRANSFER_TRIES = 5


@dataclass
class Backoff:
    """Doubling waits between tries, from ``first`` up to ``longest`` seconds, reset by a success."""

    first: float = 1.0
    longest: float = 30.0
    current: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The wait before the next try (and doubles the one after)."""
        self.current = self.first if self.current == 0 else min(self.longest, self.current * 2)
        return self.current

    def reset(self) -> None:
        """A try succeeded: start again from ``first`` next time."""
        self.current = 0.0


class LedgerUnavailable(LedgerError):
    """The ledger could not be reached or answered with a server error (tried again before giving up);
    a runner backs off and tries later."""

    title = "Ledger unavailable"


def media_type_of(path: Path) -> str:
    """The media type an output is recorded with."""
    return "application/json" if path.suffix == ".json" else "application/octet-stream"


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _problem(answer: httpx.Response) -> str:
    """The one-line reason of a refused request (a problem's ``detail``, else the body's start)."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:300] or answer.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]


class RunLedger:
    """The run-scoped part of the ledger's runner API, used with the run's token only."""

    def __init__(self, client: httpx.Client, order: WorkOrder, backoff: Backoff | None = None) -> None:
        self.client = client
        self.order = order
        self.base = f"/v1/runner/runs/{order.run_id}"
        self.backoff = backoff or Backoff(first=0.5, longest=8.0)

    def _retrying(self, what: str, attempt: Any) -> Any:
        """Call ``attempt()`` until it answers; transport errors and 5xx answers are retried a few times."""
        self.backoff.reset()
        for tried in range(1, TRANSFER_TRIES + 1):
            try:
                answer = attempt()
            except httpx.HTTPError as exc:
                reason = f"cannot reach the ledger to {what}: {exc}"
            else:
                if answer.status_code < 500:
                    if answer.status_code >= 400:
                        raise LedgerError(f"the ledger refused to {what} ({answer.status_code}): {_problem(answer)}")
                    return answer
                reason = f"the ledger failed to {what} ({answer.status_code}): {_problem(answer)}"
            if tried == TRANSFER_TRIES:
                raise LedgerUnavailable(reason)
            time.sleep(self.backoff.next())
        raise AssertionError("unreachable")  # pragma: no cover

    def download(self, item: Input, folder: Path) -> Path:
        """Download one input into ``folder``, named by its digest; refuse it when its SHA-256 differs."""
        target = folder / item.digest.removeprefix("sha256:")
        temporary = folder / f".{target.name}.partial"

        def attempt() -> httpx.Response:
            hasher = hashlib.sha256()
            with self.client.stream("GET", f"{self.base}/inputs/{item.digest}") as answer:
                if answer.status_code != 200:
                    answer.read()
                    return answer
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as sink:
                    for chunk in answer.iter_bytes(CHUNK):
                        hasher.update(chunk)
                        sink.write(chunk)
            found = "sha256:" + hasher.hexdigest()
            if found != item.digest:
                temporary.unlink(missing_ok=True)
                raise LedgerError(f"input {item.name} arrived with digest {found}, not {item.digest}; refusing it")
            return answer

        try:
            self._retrying(f"download input {item.name}", attempt)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    def upload(self, path: Path) -> Output:
        """Upload one output file; return it by digest, checked against the digest the ledger stored."""
        digest = file_digest(path)

        def attempt() -> httpx.Response:
            with path.open("rb") as handle:
                return self.client.put(
                    f"{self.base}/outputs",
                    params={"name": path.name},
                    content=_chunks(handle),
                    headers={"Content-Type": "application/octet-stream"},
                )

        stored = self._retrying(f"upload output {path.name}", attempt).json()
        if stored.get("digest") != digest:
            raise LedgerError(f"output {path.name} was stored with digest {stored.get('digest')}, not {digest}")
        return Output(path.name, digest, int(stored["size"]), media_type_of(path))

    def upload_all(self, paths: list[Path]) -> list[Output]:
        """Upload several output files in one request; return them by digest, each checked against the
        digest the ledger stored."""
        if len(paths) == 1:
            return [self.upload(paths[0])]
        digests = [file_digest(path) for path in paths]
        sizes = [path.stat().st_size for path in paths]

        def body() -> Iterator[bytes]:
            for path in paths:
                with path.open("rb") as handle:
                    yield from _chunks(handle)

        def attempt() -> httpx.Response:
            return self.client.put(
                f"{self.base}/outputs:batch",
                params={"name": [path.name for path in paths], "size": sizes},
                content=body(),
                headers={"Content-Type": "application/octet-stream"},
            )

        names = ", ".join(path.name for path in paths)
        stored = self._retrying(f"upload outputs {names}", attempt).json()["outputs"]
        outputs = []
        for path, digest, answer in zip(paths, digests, stored, strict=True):
            if answer.get("digest") != digest:
                raise LedgerError(f"output {path.name} was stored with digest {answer.get('digest')}, not {digest}")
            outputs.append(Output(path.name, digest, int(answer["size"]), media_type_of(path)))
        return outputs

    def progress(self, points: list[dict[str, Any]]) -> bool:
        """Post metric points as the run's progress (one try); whether the ledger took them."""
        try:
            answer = self.client.post(f"{self.base}/metrics", json={"points": points})
        except httpx.HTTPError:
            return False
        return answer.status_code < 300


__all__ = ["Backoff", "LedgerUnavailable", "RunLedger", "file_digest", "media_type_of"]
