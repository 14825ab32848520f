"""Domain-only builders for governance tests: a succeeded run, a registered
model version, approvers with signing keys, signed decisions. No database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.approval import ApprovalPolicy, FairnessEvidence, approval_statement, sign_statement
from domain.integrity.keys import Signer, public_key_pem
from domain.model import Model, ModelVersion
from domain.run import Run

SUBMITTER = "user:dave"
REGISTRAR = "user:erin"
RUNNER = "runner:r1"
DIGEST = "sha256:" + "ab" * 32
RUN_DIGEST = "sha256:" + "cd" * 32
SCHEMA: list[dict[str, Any]] = [{"name": "age", "type": "number"}, {"name": "city", "type": "string"}]


def succeeded_run(submitted_by: str = SUBMITTER, artifact: str = "model.pkl") -> Run:
    """A run that ran on a runner, recorded ``artifact`` and succeeded."""
    run = Run(
        name="train",
        mode="runner",
        pipeline_id="pipeline-1",
        pipeline_version=1,
        spec_digest=DIGEST,
        dataset_version_ids=["dataset-1"],
        code_version_id=None,
        params={},
        seed=7,
        device="cpu",
        reproduces=None,
        actor=submitted_by,
    )
    run.claim("r1", "host-1", actor=RUNNER)
    run.capture_environment({"python": "3.11"}, DIGEST, "cpu", None, actor=RUNNER)
    run.record_artifact(artifact, DIGEST, 10, "application/octet-stream", actor=RUNNER)
    run.finish("succeeded", None, actor=RUNNER)
    return run


def model(name: str = "credit", policy: dict[str, Any] | None = None) -> Model:
    """A model with ``policy`` (the default policy when None)."""
    return Model(name=name, policy=ApprovalPolicy.from_dict(policy).to_dict(), actor=REGISTRAR)


def registered_version(of: Model | None = None, registrar: str = REGISTRAR) -> ModelVersion:
    """The next version of ``of`` (a new default model when None), registered by ``registrar``."""
    target = of if of is not None else model()
    return target.add_version(
        run=succeeded_run(), run_digest=RUN_DIGEST, artifact_name="model.pkl", input_schema=SCHEMA, actor=registrar
    )


@dataclass
class Approver:
    """A principal id with a signing key, as the approval statement names them."""

    principal_id: str
    signer: Signer = field(default_factory=Signer.generate)

    @property
    def key_id(self) -> str:
        """The id of the approver's signing key."""
        return self.signer.key_id

    @property
    def public_key_pem(self) -> str:
        """The approver's registered public key."""
        return public_key_pem(self.signer.public_key)

    def statement(self, version: ModelVersion, decision: str = "approve", **changes: Any) -> dict[str, Any]:
        """The statement this approver signs about ``version`` (with ``changes`` applied)."""
        statement = approval_statement(
            model_version_id=str(version.id),
            model_name=version.model_name,
            version=version.number,
            artifact_digest=version.artifact_digest,
            run_digest=version.run_digest,
            decision=decision,
            reason=f"{self.principal_id} reviewed it",
            approver=self.principal_id,
            signed_at="2025-01-01T00:00:00Z",
        )
        return statement | changes

    def decide(
        self,
        version: ModelVersion,
        decision: str = "approve",
        policy: ApprovalPolicy | None = None,
        fairness: FairnessEvidence | None = None,
        **changes: Any,
    ) -> str:
        """Sign and record a decision on ``version``; return what ``decide`` returns."""
        statement = self.statement(version, decision, **changes)
        return version.decide(
            approver=self.principal_id,
            key_id=self.key_id,
            public_key_pem=self.public_key_pem,
            statement=statement,
            signature=sign_statement(statement, self.signer.sign),
            policy=policy or ApprovalPolicy(),
            fairness=fairness or FairnessEvidence(),
            actor=f"user:{self.principal_id}",
        )


def approved_version(of: Model | None = None) -> ModelVersion:
    """A version two independent approvers approved under the default policy."""
    version = registered_version(of)
    for name in ("alice", "bob"):
        Approver(name).decide(version)
    return version
