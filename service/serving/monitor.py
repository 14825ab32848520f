"""The drift monitor: recent inputs against the training data's reference profile.

A check takes the newest window of predictions the champion served, reads
their inputs from the ledger (decrypting data subjects' inputs; erased ones are
skipped), and compares them with the version's ``reference_profile`` report by
PSI per feature and KS (numeric) or chi-squared (categorical). When a threshold
is crossed it records ``Monitor.DriftDetected`` and, if the model's policy says
``retrain_on_drift``, requests a retraining run of the version's pipeline on the
newest version of its training dataset.

Monitoring figures (served counts, latency, live accuracy per window, alerts)
come from the ``predictions`` read models.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import Notification
from pydantic import BaseModel

from domain.dataset import Dataset, DatasetVersion
from domain.deployment import Deployment
from domain.errors import LedgerError, ModelNotDeployed, NoChampion, NoReferenceProfile, NotFound
from domain.model import Model, ModelVersion
from domain.monitor import Monitor
from domain.prediction import CHALLENGER
from domain.report import REFERENCE_PROFILE, Report
from domain.run import Run
from domain.statistics.drift import compare_window
from projections.predictions import predictions
from service.application.ledger_core import SYSTEM_ACTOR
from service.bootstrap import Services
from service.common.periodic import PeriodicThread
from service.serving.vault import SubjectVault
from service.store.event_store import open_record
from service.store.persistence import read_events

log = logging.getLogger(__name__)


class DriftCheck(BaseModel):
    """What one drift check found."""

    model_name: str
    version: int | None
    window: dict[str, Any]
    comparison: dict[str, Any] | None
    alert_position: int | None
    retraining_run_id: str | None
    note: str | None = None


class DriftMonitor:
    """Checks deployed models for drift and records what it finds."""

    def __init__(self, services: Services, vault: SubjectVault, actor: str = SYSTEM_ACTOR) -> None:
        self.services = services
        self.vault = vault
        self.actor = actor
        self._checked: dict[str, int] = {}

    def check(self, model_name: str, window: int | None = None, *, only_new: bool = False) -> DriftCheck:
        """Compare the newest ``window`` served inputs of the champion with its reference profile."""
        settings, ledger = self.services.settings, self.services.ledger
        size = window or settings.monitor_window
        ledger.get(Model.create_id(name=model_name), Model)
        try:
            deployment: Deployment = ledger.get(Deployment.create_id(model_name=model_name), Deployment)
        except NotFound:
            raise ModelNotDeployed(f"{model_name} is not deployed; nothing to monitor", field="name") from None
        if deployment.champion is None:
            raise NoChampion(f"{model_name} has no champion to monitor", field="name")
        version: ModelVersion = ledger.get(deployment.champion.version_id, ModelVersion)
        with self.services.engine.connect() as conn:
            rows = conn.execute(
                sa.select(predictions.c.prediction_id, predictions.c.position)
                .where(
                    predictions.c.model_name == model_name,
                    predictions.c.number == version.number,
                    predictions.c.role != CHALLENGER,
                )
                .order_by(predictions.c.position.desc())
                .limit(size)
            ).all()

        def nothing_to_check(note: str) -> DriftCheck:
            empty = {"predictions": 0, "from_position": None, "to_position": None}
            return DriftCheck(
                model_name=model_name,
                version=version.number,
                window=empty,
                comparison=None,
                alert_position=None,
                retraining_run_id=None,
                note=note,
            )

        if not rows:
            return nothing_to_check("no served predictions yet")
        newest = rows[0].position
        if only_new and self._checked.get(model_name, 0) >= newest:
            return nothing_to_check("no new predictions since the last check")
        try:
            profile: Report = ledger.get(
                Report.create_id(model_version_id=str(version.id), kind=REFERENCE_PROFILE), Report
            )
        except NotFound:
            raise NoReferenceProfile(
                f"{model_name} v{version.number} has no reference profile yet; reports are computed after registration",
                field="name",
            ) from None
        features = list(profile.summary.get("features", {}))
        columns: dict[str, list[Any]] = {f: [] for f in features}
        inputs = self._inputs([row.prediction_id for row in rows])
        used = 0
        for row in reversed(rows):
            values = inputs.get(row.prediction_id)
            if values is None:
                continue
            used += 1
            for f in features:
                columns[f].append(values.get(f))
        self._checked[model_name] = newest
        span = {
            "predictions": used,
            "from_position": rows[-1].position,
            "to_position": newest,
            "skipped_erased": len(rows) - used,
        }
        comparison = compare_window(
            profile.summary, columns, psi_threshold=settings.psi_threshold, p_threshold=settings.drift_p_threshold
        )
        if not comparison["drifted"]:
            return DriftCheck(
                model_name=model_name,
                version=version.number,
                window=span,
                comparison=comparison,
                alert_position=None,
                retraining_run_id=None,
            )
        retraining = self._retrain(model_name, version)
        monitor = self._monitor(model_name)
        statistics = {
            name: {k: v for k, v in stats.items() if k in ("kind", "psi", "test", "statistic", "p_value", "drifted")}
            for name, stats in comparison["features"].items()
        }
        monitor.detect(
            model_name=model_name,
            model_version_id=str(version.id),
            number=version.number,
            window=span,
            drifted_features=comparison["drifted_features"],
            statistics=statistics,
            thresholds=comparison["thresholds"],
            retraining_run_id=retraining,
            actor=self.actor,
        )
        written = ledger.save(monitor)
        return DriftCheck(
            model_name=model_name,
            version=version.number,
            window=span,
            comparison=comparison,
            alert_position=written[-1].notification.id,
            retraining_run_id=retraining,
        )

    def _monitor(self, model_name: str) -> Monitor:
        try:
            monitor: Monitor = self.services.ledger.get(Monitor.create_id(model_name=model_name), Monitor)
        except NotFound:
            monitor = Monitor(model_name=model_name, actor=self.actor)
        return monitor

    def _inputs(self, prediction_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """The recorded input of each prediction (None once its subject was erased), read in one query."""
        inputs: dict[str, dict[str, Any] | None] = {}
        for row in read_events(self.services.engine, prediction_ids):
            if row.version != 1:
                continue  # outcomes and overrides
            made = Notification(
                id=row.position,
                originator_id=uuid.UUID(row.aggregate_id),
                originator_version=row.version,
                topic=row.topic,
                state=row.record,
            )
            _, envelope = open_record(made)
            inputs[row.aggregate_id] = self.vault.recorded_input(envelope["payload"])[0]
        return inputs

    def _retrain(self, model_name: str, version: ModelVersion) -> str | None:
        """Request a retraining run on the newest training data when the policy asks for it."""
        ledger = self.services.ledger
        if not ledger.get(Model.create_id(name=model_name), Model).policy.retrain_on_drift:
            return None
        run: Run = ledger.get(version.run_id, Run)
        if run.mode != "runner" or not run.dataset_version_ids:
            log.warning("drift on %s: its run cannot be re-executed, so no retraining was requested", model_name)
            return None
        first: DatasetVersion = ledger.get(run.dataset_version_ids[0], DatasetVersion)
        series: Dataset = ledger.get(Dataset.create_id(name=first.name), Dataset)
        datasets = [series.versions[-1], *run.dataset_version_ids[1:]]
        written = ledger.request_again(
            str(run.id), self.actor, reproduce=False, datasets=datasets, purpose="retrain on drift:"
        )
        return str(written.id)

    def check_all(self) -> list[DriftCheck]:
        """Check every deployed model that served new predictions since the last check."""
        with self.services.engine.connect() as conn:
            names = [r.model_name for r in conn.execute(sa.select(predictions.c.model_name).distinct())]
        results = []
        for name in names:
            try:
                results.append(self.check(name, only_new=True))
            except LedgerError as exc:
                log.info("drift check of %s skipped: %s", name, exc.detail)
        return results


class MonitorThread(PeriodicThread):
    """Runs drift checks every ``interval`` seconds in the background of ``mlledger serve``.

    The first checks run one interval after the start; :meth:`stop` waits for
    the current checks (at most a minute).
    """

    def __init__(self, monitor: DriftMonitor, interval: float) -> None:
        super().__init__(
            "mlledger-monitor", interval, self._pass, failure="the drift monitor failed a pass", logger=log
        )
        self.monitor = monitor

    def _pass(self) -> None:
        self.monitor.check_all()
