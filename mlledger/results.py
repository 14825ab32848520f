"""Typed results of the SDK: frozen dataclasses built from the API's JSON.

Each keeps the whole JSON in ``raw``; ``result["key"]`` reads it, as the plain
dictionaries of earlier releases did, so existing code keeps working.
"""

from __future__ import annotations

import base64
import dataclasses
import json
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
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the cursor of the next (None on the last page)."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _each(build: type[R], items: list[dict[str, Any]] | None) -> list[R]:
    return [build.from_json(item) for item in items or []]


def _maybe(build: type[R], item: dict[str, Any] | None) -> R | None:
    return None if item is None else build.from_json(item)


@dataclass(frozen=True)
class ChangeInfo(Record):
    """A proposed privileged change and where it stands."""

    id: str = ""
    kind: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    proposer: str = ""
    status: str = ""
    confirmer: str | None = None


@dataclass(frozen=True)
class ChangeOutcome(Record):
    """A confirmed change: the changed record's id, the ledger position, and a key it issued (shown once)."""

    id: str = ""
    position: int = 0
    pending: bool = False
    api_key: str | None = None


@dataclass(frozen=True)
class Manifest(Record):
    """A run's reproducibility manifest: the document, its digest and the ledger position it reflects.

    ``cost`` is what the document's resources cost at the service's rates now
    (amount, currency, rates), or None for a run that recorded none.
    """

    run_id: str = ""
    digest: str = ""
    position: int = 0
    document: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None


@dataclass(frozen=True)
class Provenance(Record):
    """A run's in-toto/SLSA provenance: a DSSE envelope signed by the ledger key."""

    payload_type: str = ""
    payload: str = ""
    signatures: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build from the envelope (``payloadType`` becomes ``payload_type``)."""
        return cls(raw=data, payload_type=data["payloadType"], payload=data["payload"], signatures=data["signatures"])

    @property
    def statement(self) -> dict[str, Any]:
        """The in-toto Statement the envelope carries (decoded, not verified)."""
        decoded: dict[str, Any] = json.loads(base64.b64decode(self.payload))
        return decoded


@dataclass(frozen=True)
class ApprovalInfo(Record):
    """A signed approval or rejection, verifiable with the approver's key."""

    notification_id: int = 0
    model_version_id: str = ""
    approver: str = ""
    key_id: str = ""
    decision: str = ""
    statement: dict[str, Any] = field(default_factory=dict)
    signature: str = ""
    recorded_at: str = ""


@dataclass(frozen=True)
class DeploymentChange(Record):
    """One change of a deployment."""

    notification_id: int = 0
    model_name: str = ""
    action: str = ""
    model_version_id: str | None = None
    number: int | None = None
    share: float | None = None
    reason: str | None = None
    actor: str = ""
    recorded_at: str = ""


@dataclass(frozen=True)
class Lineage(Record):
    """Everything a model version comes from and everything decided about it.

    ``run`` (the source run with its final metrics and artifacts),
    ``code_version`` and ``pipeline`` stay JSON objects.
    """

    model: ModelInfo | None = None
    version: ModelVersionInfo | None = None
    run: dict[str, Any] | None = None
    datasets: list[DatasetVersionInfo] = field(default_factory=list)
    code_version: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    approvals: list[ApprovalInfo] = field(default_factory=list)
    deployment_history: list[DeploymentChange] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with the model, version, datasets, approvals and deployment changes typed."""
        version = data["version"]
        return cls(
            raw=data,
            model=_maybe(ModelInfo, data.get("model")),
            version=ModelVersionInfo.from_json({"version": version["number"], **version}),
            run=data.get("run"),
            datasets=_each(DatasetVersionInfo, data.get("datasets")),
            code_version=data.get("code_version"),
            pipeline=data.get("pipeline"),
            approvals=_each(ApprovalInfo, data.get("approvals")),
            deployment_history=_each(DeploymentChange, data.get("deployment_history")),
        )


@dataclass(frozen=True)
class ChampionAt(Record):
    """Which version served a model as champion at a moment (``number`` None: none did)."""

    model_name: str = ""
    at: str = ""
    model_version_id: str | None = None
    number: int | None = None
    stopped: bool = False
    retired: bool = False
    decided_by: int | None = None
    decided_at: str | None = None


@dataclass(frozen=True)
class AuditEvent(Record):
    """One event as the audit trail keeps it."""

    notification_id: int = 0
    aggregate_id: str = ""
    aggregate_type: str = ""
    version: int = 0
    event_type: str = ""
    topic: str = ""
    actor: str = ""
    recorded_at: str = ""
    model_name: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    hash: str = ""


@dataclass(frozen=True)
class AuditPage(Record):
    """A page of the audit trail; pass ``next_after`` as ``cursor`` for the next (None on the last)."""

    events: list[AuditEvent] = field(default_factory=list)
    next_after: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with each event typed."""
        return cls(raw=data, events=_each(AuditEvent, data["events"]), next_after=data.get("next_after"))

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class Prediction(Record):
    """A served prediction; ``position`` is its event's ledger position (0 inside a batch)."""

    prediction_id: str = ""
    request_id: str = ""
    model_name: str = ""
    version: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    reason_codes: list[dict[str, Any]] = field(default_factory=list)
    position: int = 0


@dataclass(frozen=True)
class PredictionBatch(Record):
    """Predictions served together, in the order of the records, and the ledger position of the last event."""

    predictions: list[Prediction] = field(default_factory=list)
    position: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with each prediction typed."""
        return cls(raw=data, predictions=_each(Prediction, data["predictions"]), position=data["position"])

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)


@dataclass(frozen=True)
class Decision(Record):
    """One prediction reconstructed with everything behind it.

    ``origin`` is ``served`` (by this ledger) or ``logged`` (made elsewhere at
    ``predicted_at``); ``input`` is None once the subject was erased;
    ``final_decision`` is the output or the latest override; ``event`` proves
    the prediction event (its hash and signature).
    """

    prediction_id: str = ""
    request_id: str = ""
    model_name: str = ""
    version: int = 0
    model_version_id: str = ""
    role: str = ""
    shadow_of: str | None = None
    caller: str = ""
    recorded_at: str = ""
    origin: str = ""
    predicted_at: str | None = None
    latency_ms: float | None = None
    subject_id: str | None = None
    input: dict[str, Any] | None = None
    input_erased: bool = False
    input_digest: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    reason_codes: list[dict[str, Any]] = field(default_factory=list)
    explanation: dict[str, Any] | None = None
    outcome: Any = None
    has_outcome: bool = False
    overrides: list[dict[str, Any]] = field(default_factory=list)
    final_decision: dict[str, Any] = field(default_factory=dict)
    champion_at_time: ChampionAt | None = None
    lineage: Lineage | None = None
    shadow: dict[str, Any] | None = None
    event: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with the champion at the time and the lineage typed."""
        names = {f.name for f in dataclasses.fields(cls)} - {"raw", "champion_at_time", "lineage"}
        return cls(
            raw=data,
            champion_at_time=_maybe(ChampionAt, data.get("champion_at_time")),
            lineage=_maybe(Lineage, data.get("lineage")),
            **{k: v for k, v in data.items() if k in names},
        )


@dataclass(frozen=True)
class VersionServing(Record):
    """Serving figures of one version (latencies of the predictions whose maker gave one)."""

    version: int = 0
    role: str = ""
    predictions: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    outcomes: int = 0
    overrides: int = 0


@dataclass(frozen=True)
class AccuracyWindow(Record):
    """Live accuracy (or mean absolute error) over a window of predictions with outcomes."""

    version: int = 0
    from_position: int = 0
    to_position: int = 0
    outcomes: int = 0
    accuracy: float | None = None
    mean_absolute_error: float | None = None


@dataclass(frozen=True)
class DriftAlert(Record):
    """A recorded drift alert."""

    position: int = 0
    version: int = 0
    recorded_at: str = ""
    drifted_features: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    retraining_run_id: str | None = None


@dataclass(frozen=True)
class Monitoring(Record):
    """A model's serving figures per version, live accuracy per window of outcomes, and drift alerts."""

    model_name: str = ""
    window: int = 0
    versions: list[VersionServing] = field(default_factory=list)
    live_accuracy: list[AccuracyWindow] = field(default_factory=list)
    drift_alerts: list[DriftAlert] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build, with versions, accuracy windows and alerts typed."""
        return cls(
            raw=data,
            model_name=data["model_name"],
            window=data["window"],
            versions=_each(VersionServing, data["versions"]),
            live_accuracy=_each(AccuracyWindow, data["live_accuracy"]),
            drift_alerts=_each(DriftAlert, data["drift_alerts"]),
        )


@dataclass(frozen=True)
class DriftCheckResult(Record):
    """What one drift check found; ``alert_position`` is set when it recorded an alert."""

    model_name: str = ""
    version: int | None = None
    window: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    alert_position: int | None = None
    retraining_run_id: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Report(Record):
    """A signed report about a model version (``explanations`` or ``fairness``), as published.

    ``attachments`` maps file names to their ``sha256:`` digests in the blob store.
    """

    model_version_id: str = ""
    model_name: str = ""
    version: int = 0
    kind: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, str] = field(default_factory=dict)
    computed_from: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""
    position: int = 0


@dataclass(frozen=True)
class ExportCreated(Record):
    """A recorded export: its id, the archive's digest and size, how many events it holds, its position."""

    id: str = ""
    digest: str = ""
    size: int = 0
    events: int = 0
    position: int = 0


@dataclass(frozen=True)
class ExportInfo(Record):
    """An export bundle the caller may see."""

    id: str = ""
    model_name: str = ""
    scope: dict[str, Any] = field(default_factory=dict)
    shared_with: list[str] = field(default_factory=list)
    events: int = 0
    bundle_digest: str | None = None
    size: int | None = None
    created_by: str = ""
    created_at: str = ""
    downloads: int = 0
