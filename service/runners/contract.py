"""What an executor is given and what it hands back, shared by every kind.

The request says everything a run needs (spec, params, seed, device, local
dataset files, code archive, an empty output folder); the result lists the
metric points, the model file and the predictions file, all inside that folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.errors import LedgerError

Progress = Callable[[list[dict[str, Any]]], None]
"""Receives metric points ({"key", "value", "step"}) as they happen."""


class ExecutionError(LedgerError):
    """A run cannot execute as specified: bad spec, bad data, missing entrypoint, time limit.

    The message is one line that says why; the runner records it as the run's error.
    """

    title = "Execution failed"


@dataclass(frozen=True)
class ExecutionRequest:
    """One pipeline execution: the spec and run params, the seed and the resolved device.

    ``datasets`` are local CSV files already checked against their digests (the
    first is the training data); ``code_archive`` is the registered code version
    (python kind); ``output_dir`` is an empty folder the executor writes into.
    """

    kind: str
    spec: dict[str, Any]
    params: dict[str, Any]
    seed: int
    device: str
    datasets: list[Path]
    code_archive: Path | None
    output_dir: Path

    def to_json(self) -> dict[str, Any]:
        """The request as JSON values (paths as strings), for a child process."""
        return {
            "kind": self.kind,
            "spec": self.spec,
            "params": self.params,
            "seed": self.seed,
            "device": self.device,
            "datasets": [str(p) for p in self.datasets],
            "code_archive": None if self.code_archive is None else str(self.code_archive),
            "output_dir": str(self.output_dir),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionRequest:
        """Rebuild a request written by :meth:`to_json`."""
        archive = data.get("code_archive")
        return cls(
            kind=str(data["kind"]),
            spec=dict(data["spec"]),
            params=dict(data.get("params") or {}),
            seed=int(data["seed"]),
            device=str(data["device"]),
            datasets=[Path(p) for p in data.get("datasets") or []],
            code_archive=None if archive is None else Path(archive),
            output_dir=Path(data["output_dir"]),
        )


@dataclass(frozen=True)
class ExecutionResult:
    """What an execution produced.

    ``metrics`` holds every point; the first ``details["metrics_reported_live"]``
    of them were already passed to the progress callback, in the same order.
    ``predictions_file`` is JSON ``{"ids": [...], "values": [...]}`` over the
    validation rows.
    """

    metrics: list[dict[str, Any]]
    model_file: Path
    predictions_file: Path
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The result as JSON values (paths as strings)."""
        return {
            "metrics": self.metrics,
            "model_file": str(self.model_file),
            "predictions_file": str(self.predictions_file),
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionResult:
        """Rebuild a result written by :meth:`to_json`."""
        return cls(
            metrics=list(data["metrics"]),
            model_file=Path(data["model_file"]),
            predictions_file=Path(data["predictions_file"]),
            details=dict(data.get("details") or {}),
        )
