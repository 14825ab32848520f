"""Model versions, signed approvals and deployments."""

from __future__ import annotations

from typing import Any

from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.dataset import DatasetVersion
from domain.deployment import Deployment
from domain.errors import InvalidPayload, NotFound
from domain.model import Model, ModelVersion
from domain.principal import Principal
from domain.report import FAIRNESS, Report
from domain.run import Run
from service.application.ledger_core import LedgerCore, Written
from service.store.event_store import LedgerEventStore


class GovernanceCommands(LedgerCore):
    """Commands that register, approve and deploy models."""

    def model(self, name: str) -> Model:
        """The named model, or :class:`NotFound`."""
        model: Model = self.get(Model.create_id(name=name), Model)
        return model

    def model_version(self, name: str, number: int) -> ModelVersion:
        """Version ``number`` of the named model, or :class:`NotFound`."""
        model = self.model(name)
        if not 1 <= number <= len(model.versions):
            raise NotFound(f"model {name} has no version {number}", field="version")
        version: ModelVersion = self.get(model.versions[number - 1], ModelVersion)
        return version

    def run_digest(self, run: Run) -> str:
        """``sha256:<hash of the run's latest event>``: it commits to the run's whole history."""
        store = self.events
        assert isinstance(store, LedgerEventStore)
        return "sha256:" + store.head_hash(run.id, run.version)

    def register_model_version(
        self,
        *,
        model_name: str,
        run_id: str,
        artifact_name: str,
        input_schema: list[dict[str, Any]],
        policy: dict[str, Any] | None,
        actor: str,
    ) -> Written:
        """Register the next version of a model from a succeeded run's artifact."""
        ModelVersion.check_registration(model_name, input_schema)
        try:
            run: Run = self.get(run_id, Run)
        except NotFound:
            raise InvalidPayload(f"no run {run_id}", field="run_id") from None
        ModelVersion.check_source(run, artifact_name)  # before the policy is parsed: its errors come second
        model = self._series(Model, model_name, actor, policy=ApprovalPolicy.from_dict(policy).to_dict())
        if policy is not None and model.version > 0:
            model.change_policy(policy, actor=actor)
        version = model.add_version(
            run=run,
            run_digest=self.run_digest(run),
            artifact_name=artifact_name,
            input_schema=input_schema,
            actor=actor,
        )
        recordings = self.save(model, version)  # the model (and its policy) before its version
        return Written(id=str(version.id), position=recordings[-1].notification.id)

    def set_policy(self, model_name: str, policy: dict[str, Any], actor: str) -> Written:
        """Change a model's approval policy."""
        model = self.model(model_name)
        model.change_policy(policy, actor=actor)
        return self._written(model)

    def decide(
        self,
        *,
        model_name: str,
        number: int,
        approver_id: str,
        key_id: str,
        statement: dict[str, Any],
        signature: str,
        actor: str,
    ) -> tuple[str, Written]:
        """Check and record a signed approval or rejection; return the decision."""
        version = self.model_version(model_name, number)
        policy = self.model(model_name).policy
        approver: Principal = self.get(approver_id, Principal)
        decision = version.decide(
            approver=str(approver.id),
            key_id=key_id,
            public_key_pem=approver.signing_key(key_id),
            statement=statement,
            signature=signature,
            policy=policy,
            fairness=self.fairness_evidence(version),
            actor=actor,
        )
        return decision, self._written(version)

    def fairness_evidence(self, version: ModelVersion) -> FairnessEvidence:
        """The protected attributes the version's training data declares, and its fairness report's summary."""
        run: Run = self.get(version.run_id, Run)
        protected: list[str] = []
        for dataset_id in run.dataset_version_ids:
            dataset: DatasetVersion = self.get(dataset_id, DatasetVersion)
            protected.extend(str(a) for a in dataset.datasheet.get("protected_attributes", []) or [])
        try:
            report: Report = self.get(Report.create_id(model_version_id=str(version.id), kind=FAIRNESS), Report)
        except NotFound:
            summary = None
        else:
            summary = report.summary if report.publications else None
        return FairnessEvidence(tuple(dict.fromkeys(protected)), summary)

    def _deployment(self, model_name: str, actor: str) -> Deployment:
        self.model(model_name)
        try:
            deployment: Deployment = self.get(Deployment.create_id(model_name=model_name), Deployment)
        except NotFound:
            deployment = Deployment(model_name=model_name, actor=actor)
        return deployment

    def deploy(
        self,
        *,
        model_name: str,
        action: str,
        number: int | None,
        share: float | None,
        reason: str,
        actor: str,
    ) -> Written:
        """Change the deployment of a model (champion, challenger, canary, rollback, stop, resume, retire)."""
        deployment = self._deployment(model_name, actor)
        policy = self.model(model_name).policy
        version = self.model_version(model_name, number) if number is not None else None
        fairness = self.fairness_evidence(version) if version is not None else FairnessEvidence()
        if action in ("champion", "rollback") and version is None:
            raise InvalidPayload(f"{action} needs a version", field="version")
        if action == "champion" and version is not None:
            deployment.set_champion(version, policy, reason, actor=actor, fairness=fairness)
        elif action == "rollback" and version is not None:
            deployment.roll_back(version, policy, reason, actor=actor, fairness=fairness)
        elif action == "challenger":
            deployment.set_challenger(version, policy, actor=actor, fairness=fairness)
        elif action == "canary":
            deployment.set_canary(version, share if share is not None else 0.0, policy, actor=actor, fairness=fairness)
        elif action == "stop":
            deployment.stop(reason, actor=actor)
        elif action == "resume":
            deployment.resume(reason, actor=actor)
        elif action == "retire":
            deployment.retire(reason, actor=actor)
        else:
            raise InvalidPayload(f"unknown deployment action {action!r}", field="action")
        return self._written(deployment)
