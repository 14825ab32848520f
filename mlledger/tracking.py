"""Tracking helpers: a run used as a ``with`` block, and a buffer of metric points."""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import Any, Protocol

from mlledger.results import RunInfo, Written

ERROR_MAX = 20_000


class RunRecorder(Protocol):
    """What a run needs of the client (``LedgerClient`` is one)."""

    def log_params(self, run_id: str, params: dict[str, Any]) -> Written: ...

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> Written: ...

    def log_metrics(self, run_id: str, metrics: list[dict[str, Any]]) -> Written: ...

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> Written: ...

    def set_run_description(self, run_id: str, description: str) -> Written: ...

    def upload_artifact(
        self, run_id: str, name: str, data: bytes, media_type: str = "application/octet-stream"
    ) -> str: ...

    def finish_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> Written: ...

    def run(self, run_id: str) -> RunInfo: ...


class ActiveRun:
    """A run this client started. Its ``id`` and ``position`` are those of the start.

    Used as a ``with`` block it ends itself: ``succeeded`` when the block ends
    normally, ``failed`` (with the exception's traceback as the error) when an
    exception escapes, ``cancelled`` on ``KeyboardInterrupt``; the exception
    still propagates. A run the block already ended is left as it is.
    """

    def __init__(self, client: RunRecorder, written: Written) -> None:
        self.client = client
        self.id = written.id
        self.position = written.position

    @property
    def written(self) -> Written:
        """The start as a :class:`Written`."""
        return Written(self.id, self.position)

    def log_params(self, params: dict[str, Any]) -> Written:
        """Record parameters."""
        return self.client.log_params(self.id, params)

    def log_metric(self, key: str, value: float, step: int = 0) -> Written:
        """Record one metric point."""
        return self.client.log_metric(self.id, key, value, step)

    def log_metrics(self, metrics: list[dict[str, Any]]) -> Written:
        """Record a batch of metric points."""
        return self.client.log_metrics(self.id, metrics)

    def set_tags(self, tags: dict[str, str]) -> Written:
        """Set tags."""
        return self.client.set_run_tags(self.id, tags)

    def describe(self, description: str) -> Written:
        """Set the description."""
        return self.client.set_run_description(self.id, description)

    def upload_artifact(self, name: str, data: bytes, media_type: str = "application/octet-stream") -> str:
        """Upload an artifact; return its digest."""
        return self.client.upload_artifact(self.id, name, data, media_type)

    def finish(self, status: str = "succeeded", error: str | None = None) -> Written:
        """End the run."""
        return self.client.finish_run(self.id, status, error)

    def info(self) -> RunInfo:
        """The run's current state."""
        return self.client.run(self.id)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.client.run(self.id).finished:
            return
        if kind is None:
            self.finish("succeeded")
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("cancelled", "interrupted")
        else:
            text = "".join(traceback.format_exception(kind, error, trace))
            self.finish("failed", text[-ERROR_MAX:])


class MetricLogger:
    """Buffers one run's metric points on the client and records them in batches.

    ``log`` costs no request; ``flush`` (every ``flush_every`` points, and on
    leaving the ``with`` block) records the buffered points with one
    ``metrics:batch`` call, one signed event. Points are durable once flushed:
    :meth:`flush` returns the ledger position, as every write does.
    """

    def __init__(self, client: RunRecorder, run_id: str, flush_every: int = 1000) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be at least 1")
        self.client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self._points: list[dict[str, Any]] = []

    def log(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one point; flush when the buffer is full."""
        self._points.append({"key": key, "value": value, "step": step})
        if len(self._points) >= self.flush_every:
            self.flush()

    def flush(self) -> Written | None:
        """Record the buffered points (None when there were none)."""
        if not self._points:
            return None
        points, self._points = self._points, []
        return self.client.log_metrics(self.run_id, points)

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.flush()
