"""Typed results of the SDK: frozen dataclasses built from the API's JSON.

Each keeps the whole JSON in ``raw``; ``result["key"]`` reads it, as the plain
dictionaries of earlier releases did, so existing code keeps working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar


@dataclass(frozen=True)
class Written:
    """What a write recorded: the record's id and the ledger position of its (last) event."""

    id: str
    position: int


@dataclass(frozen=True)
class Record:
    """A result read from the service."""

    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build from a JSON object (fields the object lacks take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        return cls(raw=data, **{k: v for k, v in data.items() if k in names})

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A value of the JSON the result was read from."""
        return self.raw.get(key, default)


@dataclass(frozen=True)
class Me(Record):
    """The caller."""

    id: str = ""
    name: str = ""
    roles: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunInfo(Record):
    """A run: what it was asked to do, what it recorded and how it went."""

    id: str = ""
    name: str = ""
    mode: str = ""
    status: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    dataset_version_ids: list[str] = field(default_factory=list)
    code_version_id: str | None = None
    pipeline_version: int | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    metric_points: int = 0
    requested_at: str | None = None
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        """True once the run ended."""
        return self.status in ("succeeded", "failed", "cancelled", "abandoned")


@dataclass(frozen=True)
class DatasetVersionInfo(Record):
    """A dataset version."""

    id: str = ""
    name: str = ""
    number: int = 0
    digest: str = ""
    size: int = 0
    format: str = ""
    row_count: int = 0
    deprecated: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ModelVersionInfo(Record):
    """A model version with its approval state."""

    id: str = ""
    model_name: str = ""
    version: int = 0
    number: int = 0
    run_id: str = ""
    run_digest: str = ""
    artifact_name: str = ""
    artifact_digest: str = ""
    state: str = ""
    approvers: list[str] = field(default_factory=list)
    rejecters: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ModelInfo(Record):
    """A model and its approval policy."""

    name: str = ""
    id: str = ""
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentInfo(Record):
    """What serves a model now."""

    model_name: str = ""
    champion: int | None = None
    challenger: int | None = None
    canary: int | None = None
    canary_share: float | None = None
    stopped: bool = False
    retired: bool = False


@dataclass(frozen=True)
class MetricPoint(Record):
    """One recorded value of a metric."""

    key: str = ""
    step: int = 0
    value: float = 0.0
    timestamp: str = ""


@dataclass(frozen=True)
class ComparedRun(Record):
    """One run of a comparison: params, final metrics, tags, dataset and code versions."""

    id: str = ""
    name: str = ""
    status: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    code: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunComparison(Record):
    """Runs side by side, with the params and metrics whose values differ."""

    runs: list[ComparedRun] = field(default_factory=list)
    differing_params: list[str] = field(default_factory=list)
    differing_metrics: list[str] = field(default_factory=list)
    same_datasets: bool = True
    same_code: bool = True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with each run typed."""
        return cls(
            raw=data,
            runs=[ComparedRun.from_json(r) for r in data["runs"]],
            differing_params=data["differing_params"],
            differing_metrics=data["differing_metrics"],
            same_datasets=data["same_datasets"],
            same_code=data["same_code"],
        )


@dataclass(frozen=True)
class InclusionVerified:
    """A write shown to be in the transparency log under a checkpoint signed by the ledger key."""

    position: int
    event_hash: str
    leaf_index: int
    tree_size: int
    root_hash: str
    origin: str


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the cursor of the next (None on the last page)."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
