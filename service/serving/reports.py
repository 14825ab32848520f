"""Reports about model versions, computed off the request path after registration.

For each registered version whose model a runner trained, the worker records
three signed reports (``domain.report.Report``):

- ``explanations``: the global SHAP report on the run's validation rows (mean
  |SHAP| per feature, bar and beeswarm plots, the explainer and the digest of
  its background sample); the plots and an HTML page go to the blob store and
  the event names their digests;
- ``fairness``: for each protected attribute of the training dataset's
  datasheet (and each pair), selection rates, impact ratios, TPR and accuracy
  per group on the validation rows (classification models);
- ``reference_profile``: the training rows' per-feature bins and quantiles,
  which the drift monitor compares live inputs against.

Validation rows are the ones the run itself held out (its ``predictions.json``
lists their row numbers), so the reports describe the data the run was scored on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from domain.dataset import DatasetVersion
from domain.errors import LedgerError
from domain.model import Model, ModelVersion
from domain.pipeline import Pipeline
from domain.report import EXPLANATIONS, FAIRNESS, KINDS, REFERENCE_PROFILE, Report
from domain.run import Run
from domain.statistics.drift import reference_profile
from domain.statistics.fairness import fairness_report, impact_ratio_violations
from projections.predictions import model_reports
from projections.registry import reg_model_versions as model_versions
from service.application.ledger_core import SYSTEM_ACTOR, Written
from service.bootstrap import Services
from service.common.periodic import PeriodicThread
from service.ml.explain_report import global_report
from service.ml.tabular import as_json_value, classification_target, read_table
from service.serving.models import ModelCache, ServedModel, parse_cell

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.json"
MAX_EXPLAINED_ROWS = 1_000


@dataclass
class _Data:
    """A run's training data, split as the run split it."""

    rows: list[dict[str, Any]]
    train: list[int]
    validation: list[int]
    target: str
    task: str
    labels: list[Any] | None
    protected: list[str]


class ReportsWorker:
    """Computes and records the missing reports of registered model versions."""

    def __init__(self, services: Services, models: ModelCache, actor: str = SYSTEM_ACTOR) -> None:
        self.services = services
        self.models = models
        self.actor = actor
        self._failed: set[str] = set()

    def pending(self) -> list[str]:
        """Ids of registered versions that lack a report (as far as the read models know)."""
        with self.services.engine.connect() as conn:
            versions = [row.id for row in conn.execute(sa.select(model_versions.c.id).order_by(model_versions.c.id))]
            done: dict[str, set[str]] = {}
            for row in conn.execute(sa.select(model_reports.c.model_version_id, model_reports.c.kind)):
                done.setdefault(row.model_version_id, set()).add(row.kind)
        return [v for v in versions if done.get(v, set()) != set(KINDS) and v not in self._failed]

    def run_once(self) -> int:
        """Compute every pending version's reports; return how many versions got reports."""
        count = 0
        for version_id in self.pending():
            try:
                if self.compute(version_id) is not None:
                    count += 1
            except LedgerError as exc:
                self._failed.add(version_id)
                log.warning("no reports for model version %s: %s", version_id, exc.detail)
        return count

    def compute(self, version_id: str) -> Written | None:
        """Record the version's missing reports; None when it already has them all."""
        ledger = self.services.ledger
        version: ModelVersion = ledger.get(version_id, ModelVersion)
        missing = [kind for kind in KINDS if not self._has(version_id, kind)]
        if not missing:
            return None
        served = self.models.get(version)
        data = self._data(served)
        policy = ledger.get(Model.create_id(name=version.model_name), Model).policy
        computed: dict[str, Callable[[], tuple[dict[str, Any], dict[str, str]] | None]] = {
            EXPLANATIONS: lambda: self._explanations(served, data),
            FAIRNESS: lambda: self._fairness(served, data, policy.min_impact_ratio),
            REFERENCE_PROFILE: lambda: self._reference(served, data),
        }
        aggregates = []
        for kind in missing:
            result = computed[kind]()
            if result is None:
                continue
            summary, attachments = result
            report = Report(
                kind=kind,
                model_name=version.model_name,
                model_version_id=version_id,
                number=version.number,
                actor=self.actor,
            )
            report.publish(summary, attachments, self._source(served, data), actor=self.actor)
            aggregates.append(report)
        if not aggregates:
            return None
        recordings = ledger.save(*aggregates)
        return Written(id=version_id, position=recordings[-1].notification.id)

    def _has(self, version_id: str, kind: str) -> bool:
        try:
            self.services.ledger.get(Report.create_id(model_version_id=version_id, kind=kind), Report)
        except LedgerError:
            return False
        return True

    # -- inputs ------------------------------------------------------------------
    def _data(self, served: ServedModel) -> _Data:
        ledger, blobs = self.services.ledger, self.services.blobs
        run: Run = ledger.get(served.run_id, Run)
        if served.dataset_version_id is None or run.pipeline_id is None or run.pipeline_version is None:
            raise LedgerError(f"run {run.id} names no dataset or pipeline to compute reports from")
        spec = ledger.get(run.pipeline_id, Pipeline).spec(run.pipeline_version)
        target, task = str(spec["target"]), str(spec.get("task", served.model.task))
        dataset: DatasetVersion = ledger.get(served.dataset_version_id, DatasetVersion)
        protected = [c for c in dataset.datasheet.get("protected_attributes", []) if c != target]
        features = served.features
        columns = list(dict.fromkeys([*features, *protected]))
        table = read_table(blobs.verify(dataset.digest).path, columns, target)
        categorical = set(served.model.categorical) | set(protected)
        rows = [
            {name: parse_cell(table.columns[name][i], name in categorical) for name in columns}
            for i in range(table.n_rows)
        ]
        labels = None
        if task == "classification":
            labels = [as_json_value(v) for v in classification_target(table, target)]
        validation: list[int] = []
        if PREDICTIONS_FILE in run.artifacts:
            recorded = json.loads(b"".join(blobs.read_verified(run.artifacts[PREDICTIONS_FILE])))
            validation = sorted(int(i) for i in recorded.get("ids", []) if 0 <= int(i) < len(rows))
        held_out = set(validation)
        train = [i for i in range(len(rows)) if i not in held_out]
        return _Data(rows, train, validation or list(range(len(rows))), target, task, labels, protected)

    def _source(self, served: ServedModel, data: _Data) -> dict[str, Any]:
        return {
            "run_id": served.run_id,
            "dataset_version_id": served.dataset_version_id,
            "validation_rows": len(data.validation),
            "training_rows": len(data.train),
        }

    # -- the three reports ---------------------------------------------------------
    def _explanations(self, served: ServedModel, data: _Data) -> tuple[dict[str, Any], dict[str, str]] | None:
        if served.explainer is None:
            return None
        features = served.features
        picked = data.validation[:MAX_EXPLAINED_ROWS]
        X = served.model.matrix([{f: data.rows[i][f] for f in features} for i in picked])
        report = global_report(served.explainer, X, features)
        blobs = self.services.blobs
        attachments = {f"{name}.png": blobs.put_bytes(png).digest for name, png in report.plots().items()}
        title = f"{served.model_name} v{served.number}: what drives its predictions"
        attachments["report.html"] = blobs.put_bytes(report.to_html(title).encode()).digest
        return report.to_json(), attachments

    def _fairness(
        self, served: ServedModel, data: _Data, threshold: float | None
    ) -> tuple[dict[str, Any], dict[str, str]] | None:
        if data.task != "classification" or not data.protected or data.labels is None:
            return None
        features = served.features
        X = served.model.matrix([{f: data.rows[i][f] for f in features} for i in data.validation])
        predicted = served.model.labels(X)
        truth = [data.labels[i] for i in data.validation]
        classes = served.model.classes or sorted({*truth}, key=str)
        positive = served.model.positive_class if served.model.positive_class is not None else classes[-1]
        attributes = {a: [data.rows[i][a] for i in data.validation] for a in data.protected}
        report = fairness_report(truth, predicted, attributes, positive=positive)
        report["threshold"] = threshold
        report["violations"] = [] if threshold is None else impact_ratio_violations(report, threshold)
        return report, {}

    def _reference(self, served: ServedModel, data: _Data) -> tuple[dict[str, Any], dict[str, str]]:
        features = served.features
        rows = data.train or data.validation
        return reference_profile({f: [data.rows[i][f] for i in rows] for f in features}), {}


class ReportsThread(PeriodicThread):
    """Runs the worker every few seconds in the background of ``mlledger serve``.

    The first pass runs one interval after the start; a failed pass is logged
    and the next one tries again; :meth:`stop` waits for the current pass (at
    most two minutes).
    """

    def __init__(self, worker: ReportsWorker, interval: float = 5.0) -> None:
        super().__init__(
            "mlledger-reports",
            interval,
            self._pass,
            failure="the reports worker failed a pass",
            logger=log,
            stop_timeout=120.0,
        )
        self.worker = worker

    def _pass(self) -> None:
        self.worker.run_once()
