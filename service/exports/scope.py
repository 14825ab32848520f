"""What an export of one model holds: which aggregates, and their events.

The scope of a model is its keyring, the Model, its ModelVersions, their
Reports, the model's Monitor and Deployment, the Runs behind its versions and
the runs that reproduced them, the pipelines, dataset versions (and dataset
series) and code versions those runs used, the approvers' Principals (their
public keys are in those events), the model's Predictions recorded in the time
window (all of them, an evenly spaced sample, or none) and the Subjects of
those predictions (whose erasure tombstones a regulator needs). An aggregate is
always exported whole, from version 1, so every chain verifies from the zero
hash. Encrypted prediction inputs stay as the ciphertext the events hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.dataset import DatasetVersion
from domain.deployment import Deployment
from domain.errors import NotFound
from domain.export import PREDICTIONS_NONE, PREDICTIONS_SAMPLE, check_scope
from domain.integrity.ledger_key import KEYRING_ID
from domain.model import Model, ModelVersion
from domain.monitor import Monitor
from domain.report import KINDS, Report
from domain.run import Run
from domain.statistics.series import series_id
from domain.subject import Subject
from projections import transparency_log as tlog
from projections.audit_queries import normalize_time
from projections.predictions import predictions
from service.application.ledger import Ledger

CHUNK = 1_000


@dataclass(frozen=True)
class ExportRequest:
    """What to export: a model, a time window for its predictions, and whom it is for."""

    model_name: str
    since: str | None = None
    until: str | None = None
    predictions: str = "all"
    sample_size: int = 1_000
    shared_with: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        model_name: str,
        since: str | None = None,
        until: str | None = None,
        predictions: str = "all",
        sample_size: int = 1_000,
        shared_with: Iterable[str] = (),
    ) -> ExportRequest:
        """A request with its window in the stored time form (any RFC 3339 time is accepted)."""
        return cls(
            model_name=model_name,
            since=None if since is None else normalize_time(since, "from"),
            until=None if until is None else normalize_time(until, "to"),
            predictions=predictions,
            sample_size=sample_size,
            shared_with=tuple(shared_with),
        )

    def scope(self) -> dict[str, Any]:
        """The scope as recorded in the export event (validated)."""
        return check_scope(
            {
                "from": self.since,
                "to": self.until,
                "predictions": self.predictions,
                "sample_size": self.sample_size,
            }
        )


@dataclass
class Scope:
    """The aggregates of one export."""

    model: Model
    versions: list[ModelVersion]
    runs: list[Run]
    aggregate_ids: list[uuid.UUID]
    prediction_ids: list[str] = field(default_factory=list)
    prediction_count_in_window: int = 0


def _ids(kind: str, names: Iterable[str]) -> list[uuid.UUID]:
    return [series_id(kind, name) for name in names]


def _prediction_rows(conn: Connection, request: ExportRequest) -> tuple[list[str], list[str], int]:
    """Chosen prediction ids, their subjects, and how many predictions the window holds.

    The window's rows are streamed and only the chosen ids kept: a busy model has
    hundreds of thousands of predictions.
    """
    t = predictions
    window = [t.c.model_name == request.model_name]
    if request.since is not None:
        window.append(t.c.recorded_at >= request.since)
    if request.until is not None:
        window.append(t.c.recorded_at <= request.until)
    in_window = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*window)).scalar_one())
    if request.predictions == PREDICTIONS_NONE:
        return [], [], in_window
    picked: set[int] | None = None
    if request.predictions == PREDICTIONS_SAMPLE and in_window > request.sample_size:
        # Evenly spaced over the window, plus every overridden decision (those are what a reviewer asks about).
        step = in_window / request.sample_size
        picked = {int(i * step) for i in range(request.sample_size)}
    query = sa.select(t.c.prediction_id, t.c.subject_id, t.c.overrides).where(*window).order_by(t.c.position)
    chosen: list[str] = []
    subjects: set[str] = set()
    for i, row in enumerate(conn.execute(query.execution_options(yield_per=CHUNK * 5))):
        if picked is None or i in picked or row.overrides:
            chosen.append(row.prediction_id)
            if row.subject_id is not None:
                subjects.add(row.subject_id)
    return chosen, sorted(subjects), in_window


def select_scope(ledger: Ledger, conn: Connection, request: ExportRequest) -> Scope:
    """Every aggregate an export of ``request.model_name`` holds (NotFound for an unknown model)."""
    request.scope()
    try:
        model = ledger.model(request.model_name)
    except NotFound:
        raise NotFound(f"no model named {request.model_name!r}", field="model") from None
    versions = [ledger.get(version_id, ModelVersion) for version_id in model.versions]
    runs: dict[str, Run] = {}
    for run_id in [v.run_id for v in versions]:
        run: Run = ledger.get(run_id, Run)
        runs[str(run.id)] = run
        for reproduction in run.verdicts:
            runs.setdefault(reproduction, ledger.get(reproduction, Run))
    ids: list[uuid.UUID] = [
        KEYRING_ID,
        model.id,
        Deployment.create_id(model_name=model.name),
        Monitor.create_id(model_name=model.name),
    ]
    ids += [v.id for v in versions]
    ids += [Report.create_id(model_version_id=str(v.id), kind=kind) for v in versions for kind in KINDS]
    ids += [run.id for run in runs.values()]
    for run in runs.values():
        if run.pipeline_id is not None:
            ids.append(uuid.UUID(run.pipeline_id))
        if run.code_version_id is not None:
            ids.append(uuid.UUID(run.code_version_id))
        ids += [uuid.UUID(d) for d in run.dataset_version_ids]
    dataset_names = set()
    for dataset_id in {d for run in runs.values() for d in run.dataset_version_ids}:
        dataset_names.add(ledger.get(dataset_id, DatasetVersion).name)
    ids += _ids("dataset", sorted(dataset_names))
    approvers = sorted({p for v in versions for p in (*v.approvers, *v.rejecters)})
    ids += [uuid.UUID(p) for p in approvers]
    prediction_ids, subject_ids, in_window = _prediction_rows(conn, request)
    ids += [Subject.create_id(subject_id=s) for s in subject_ids]
    return Scope(
        model=model,
        versions=versions,
        runs=list(runs.values()),
        aggregate_ids=list(dict.fromkeys(ids)),
        prediction_ids=prediction_ids,
        prediction_count_in_window=in_window,
    )


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def leaf_indexes(conn: Connection, positions: list[int]) -> dict[int, int]:
    """The transparency-log leaf of each event position (all must be logged)."""
    t = tlog.tlog_leaves
    found: dict[int, int] = {}
    if conn.dialect.name == "postgresql":
        query = sa.select(t.c.notification_id, t.c.leaf_index).where(
            t.c.notification_id == sa.func.any(sa.cast(sa.bindparam("positions"), sa.ARRAY(sa.BigInteger)))
        )
        found.update({int(n): int(leaf) for n, leaf in conn.execute(query, {"positions": positions})})
    else:
        for chunk in _chunks(positions, 500):
            query = sa.select(t.c.notification_id, t.c.leaf_index).where(t.c.notification_id.in_(chunk))
            found.update({int(n): int(leaf) for n, leaf in conn.execute(query)})
    missing = [p for p in positions if p not in found]
    if missing:
        raise LookupError(f"events not in the transparency log yet: positions {missing[:3]}")
    return found
