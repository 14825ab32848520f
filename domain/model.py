"""Model and ModelVersion: a named model, its approval policy, and numbered
versions registered from a run's artifact, with their signed approvals."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.approval import ApprovalPolicy, FairnessEvidence, check_statement_shape, statement_verifies
from domain.errors import (
    AlreadyDecided,
    ArtifactNotInRun,
    DecisionsClosed,
    InvalidPayload,
    InvalidStatementSignature,
    SeparationOfDutiesViolated,
    StatementNotForThisVersion,
)
from domain.statistics.series import check_name, series_id

if TYPE_CHECKING:
    from domain.run import Run

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


def approval_state(policy: ApprovalPolicy, approvals: int, rejections: int) -> str:
    """pending, approved or rejected: a version's state under ``policy`` from its decision counts."""
    if rejections and policy.rejection_blocks:
        return REJECTED
    if approvals >= policy.required_approvals:
        return APPROVED
    return PENDING


class Model(LedgerAggregate):
    """A named model: its policy and the numbering of its versions."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The model name was first used."""

        TOPIC = "mlledger.model.Created.v1"
        name: str
        policy: dict[str, Any]

    class PolicyChanged(LedgerAggregate.Event):
        """The approval policy changed (applies to decisions from now on)."""

        TOPIC = "mlledger.model.PolicyChanged.v1"
        policy: dict[str, Any]

    class VersionAdded(LedgerAggregate.Event):
        """Version ``number`` is the model version ``model_version_id``."""

        TOPIC = "mlledger.model.VersionAdded.v1"
        number: int
        model_version_id: str

    @staticmethod
    def create_id(name: str, **_: object) -> uuid.UUID:
        """One aggregate per model name."""
        return series_id("model", name)

    @event(Created)
    def __init__(self, name: str, policy: dict[str, Any], actor: str) -> None:
        self.name = name
        self.policy = ApprovalPolicy.from_dict(policy)
        self.versions: list[str] = []

    def next_number(self) -> int:
        """The number the next version gets (numbers run 1, 2, 3, ...)."""
        return len(self.versions) + 1

    def add_version(
        self,
        *,
        run: Run,
        run_digest: str,
        artifact_name: str,
        input_schema: list[dict[str, Any]],
        actor: str,
    ) -> ModelVersion:
        """Register the next version of this model from a succeeded run's artifact: it gets the next number.

        ``run_digest`` commits to the run's whole history (the hash of its
        latest event). Save the model before the version it returns, so the
        series is recorded first (its version number is what the version's id
        is made of).
        """
        ModelVersion.check_registration(self.name, input_schema)
        ModelVersion.check_source(run, artifact_name)
        version = ModelVersion(
            model_name=self.name,
            number=self.next_number(),
            run_id=str(run.id),
            run_digest=run_digest,
            run_submitted_by=run.submitted_by,
            artifact_name=artifact_name,
            artifact_digest=run.artifacts[artifact_name],
            input_schema=input_schema,
            actor=actor,
        )
        self._add_version(number=version.number, model_version_id=str(version.id), actor=actor)
        return version

    @event(VersionAdded)
    def _add_version(self, number: int, model_version_id: str, actor: str) -> None:
        self.versions.append(model_version_id)

    def change_policy(self, policy: dict[str, Any], actor: str) -> None:
        """Set a new approval policy."""
        self._change_policy(policy=ApprovalPolicy.from_dict(policy).to_dict(), actor=actor)

    @event(PolicyChanged)
    def _change_policy(self, policy: dict[str, Any], actor: str) -> None:
        self.policy = ApprovalPolicy.from_dict(policy)


class ModelVersion(LedgerAggregate):
    """One version of a model, from one run's artifact."""

    class Registered(Aggregate.Created, LedgerAggregate.Event):
        """A version was registered from a run's artifact."""

        TOPIC = "mlledger.modelversion.Registered.v1"
        model_name: str
        number: int
        run_id: str
        run_digest: str
        run_submitted_by: str
        artifact_name: str
        artifact_digest: str
        input_schema: list[dict[str, Any]]

    class ApprovalGranted(LedgerAggregate.Event):
        """An approver signed an approval statement."""

        TOPIC = "mlledger.modelversion.ApprovalGranted.v1"
        approver: str
        key_id: str
        statement: dict[str, Any]
        signature: str

    class ApprovalRejected(LedgerAggregate.Event):
        """An approver signed a rejection statement."""

        TOPIC = "mlledger.modelversion.ApprovalRejected.v1"
        approver: str
        key_id: str
        statement: dict[str, Any]
        signature: str

    @staticmethod
    def create_id(model_name: str, number: int, **_: object) -> uuid.UUID:
        """One aggregate per (model, number): a duplicate version number is refused when written."""
        return series_id("model-version", f"{model_name}\n{number}")

    @event(Registered)
    def __init__(
        self,
        model_name: str,
        number: int,
        run_id: str,
        run_digest: str,
        run_submitted_by: str,
        artifact_name: str,
        artifact_digest: str,
        input_schema: list[dict[str, Any]],
        actor: str,
    ) -> None:
        self.model_name = model_name
        self.number = number
        self.run_id = run_id
        self.run_digest = run_digest
        self.run_submitted_by = run_submitted_by
        self.registered_by = actor
        self.artifact_name = artifact_name
        self.artifact_digest = artifact_digest
        self.input_schema = input_schema
        self.approvers: list[str] = []
        self.rejecters: list[str] = []

    @staticmethod
    def check_registration(model_name: str, input_schema: list[dict[str, Any]]) -> None:
        """Validate the name and the input schema."""
        check_name(model_name, "model_name")
        if not isinstance(input_schema, list):
            raise InvalidPayload("input_schema must be a list of columns", field="input_schema")
        for index, column in enumerate(input_schema):
            if not isinstance(column, dict) or not isinstance(column.get("name"), str):
                raise InvalidPayload("each input_schema column needs a string 'name'", field=f"input_schema.{index}")

    @staticmethod
    def check_source(run: Run, artifact_name: str) -> None:
        """A version comes from an artifact of a succeeded run."""
        run.check_succeeded(f"run {run.id} is {run.status}; register versions from succeeded runs", field="run_id")
        if artifact_name not in run.artifacts:
            raise ArtifactNotInRun(f"run {run.id} has no artifact named {artifact_name!r}", field="artifact_name")

    def state(self, policy: ApprovalPolicy) -> str:
        """pending, approved or rejected under ``policy``."""
        return approval_state(policy, len(self.approvers), len(self.rejecters))

    def decide(
        self,
        *,
        approver: str,
        key_id: str,
        public_key_pem: str,
        statement: dict[str, Any],
        signature: str,
        policy: ApprovalPolicy,
        fairness: FairnessEvidence,
        actor: str,
    ) -> str:
        """Record a signed approval or rejection after checking it; return the decision.

        An approval must also pass the policy's fairness gate on ``fairness``
        (which fails closed while a due report is missing); a rejection never needs it.
        """
        check_statement_shape(statement)
        expected = {
            "model_version_id": str(self.id),
            "model_name": self.model_name,
            "version": self.number,
            "artifact_digest": self.artifact_digest,
            "run_digest": self.run_digest,
            "approver": approver,
        }
        for key, value in expected.items():
            if statement[key] != value:
                raise StatementNotForThisVersion(
                    f"statement.{key} is {statement[key]!r} but this version has {value!r}",
                    field=f"statement.{key}",
                )
        if not statement_verifies(statement, signature, public_key_pem):
            raise InvalidStatementSignature(
                f"the signature does not verify with the approver's registered key {key_id}",
                field="signature",
            )
        if policy.separation_of_duties and approver in (self.registered_by, self.run_submitted_by):
            role = "registered this version" if approver == self.registered_by else "submitted its run"
            raise SeparationOfDutiesViolated(
                f"separation of duties: the approver {role}; someone else must decide", field="approver"
            )
        if approver in self.approvers or approver in self.rejecters:
            raise AlreadyDecided("this approver has already decided on this version", field="approver")
        if self.rejecters and policy.rejection_blocks:
            raise DecisionsClosed("this version was rejected; register a new version", field="statement.decision")
        if statement["decision"] == "approve":
            policy.check_fairness(fairness)
        decide = self._grant if statement["decision"] == "approve" else self._reject
        decide(approver=approver, key_id=key_id, statement=statement, signature=signature, actor=actor)
        return str(statement["decision"])

    @event(ApprovalGranted)
    def _grant(self, approver: str, key_id: str, statement: dict[str, Any], signature: str, actor: str) -> None:
        self.approvers.append(approver)

    @event(ApprovalRejected)
    def _reject(self, approver: str, key_id: str, statement: dict[str, Any], signature: str, actor: str) -> None:
        self.rejecters.append(approver)
