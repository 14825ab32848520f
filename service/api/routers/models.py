"""Model versions, signed approvals, policies and deployments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from domain.approval import approval_statement
from domain.deployment import Deployment
from domain.errors import NotFound
from domain.integrity.sealing import format_timestamp
from domain.model import ModelVersion
from domain.run import Run
from projections.usage_queries import CostPublic, run_cost
from service.api.deps import (
    ApproverCaller,
    CurrentCaller,
    LedgerDep,
    LineageReader,
    LineageWriter,
    OperatorCaller,
    PolicyAdmin,
    outcome,
    written,
)
from service.api.schemas import ChangeResult, WriteResult

router = APIRouter(prefix="/v1/models", tags=["models"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]


class PolicyBody(BaseModel):
    """An approval policy."""

    required_approvals: int = Field(2, ge=1, le=10)
    separation_of_duties: bool = True
    rejection_blocks: bool = True
    min_impact_ratio: float | None = Field(
        0.8, gt=0, le=1, description="refuse approvals while a fairness impact ratio is below this (null: never)"
    )
    retrain_on_drift: bool = Field(False, description="a drift alert requests a retraining run on the newest data")


class ModelVersionCreate(BaseModel):
    """Register a version from a succeeded run's artifact."""

    run_id: str = Field(min_length=1, max_length=64)
    artifact_name: str = Field(min_length=1, max_length=200)
    input_schema: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    policy: PolicyBody | None = Field(None, description="set the model's policy (first version, or a change)")


class VersionResult(WriteResult):
    """The new version number."""

    version: int


class ModelVersionDetail(BaseModel):
    """A model version with its approval state."""

    id: str
    model_name: str
    version: int
    run_id: str
    run_digest: str
    artifact_name: str
    artifact_digest: str
    input_schema: list[dict[str, Any]]
    registered_by: str
    state: str
    approvers: list[str]
    rejecters: list[str]
    cost: CostPublic | None = Field(None, description="what its run cost at the configured rates, once recorded")
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class DecisionCreate(BaseModel):
    """A statement signed by the approver with a registered key."""

    key_id: str = Field(min_length=16, max_length=16, pattern="^[0-9a-f]{16}$")
    statement: dict[str, Any]
    signature: str = Field(min_length=1, max_length=200)


class DecisionResult(WriteResult):
    """The recorded decision."""

    decision: str


class DeploymentChange(BaseModel):
    """One change to the deployment of a model."""

    action: Literal["champion", "challenger", "canary", "rollback", "stop", "resume", "retire"]
    version: int | None = Field(None, ge=1, le=1_000_000, description="the version (clear with null)")
    share: float | None = Field(None, gt=0, lt=1, description="canary share of traffic")
    reason: str = Field("", max_length=2000)


class DeploymentPublic(BaseModel):
    """What serves a model now."""

    model_name: str
    champion: int | None
    challenger: int | None
    canary: int | None
    canary_share: float | None
    stopped: bool
    retired: bool


def _version_public(version: ModelVersion, state: str) -> dict[str, Any]:
    return {
        "id": str(version.id),
        "model_name": version.model_name,
        "version": version.number,
        "run_id": version.run_id,
        "run_digest": version.run_digest,
        "artifact_name": version.artifact_name,
        "artifact_digest": version.artifact_digest,
        "input_schema": version.input_schema,
        "registered_by": version.registered_by,
        "state": state,
        "approvers": version.approvers,
        "rejecters": version.rejecters,
    }


@router.post("/{name}/versions", response_model=VersionResult, status_code=status.HTTP_201_CREATED)
def register_version(
    name: NamePath, body: ModelVersionCreate, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Register the next version of a model from a run's artifact (a weaker policy for an existing model is
    refused: that goes through PUT .../policy and a second admin)."""
    ledger.check_policy_at_registration(name, body.policy.model_dump() if body.policy else None)
    result = ledger.register_model_version(
        model_name=name,
        run_id=body.run_id,
        artifact_name=body.artifact_name,
        input_schema=body.input_schema,
        policy=body.policy.model_dump() if body.policy else None,
        actor=caller.actor,
    )
    return {**written(response, result), "version": ledger.get(result.id, ModelVersion).number}


@router.get("/{name}/versions/{version}", response_model=ModelVersionDetail)
def get_version(name: NamePath, version: VersionPath, caller: LineageReader, ledger: LedgerDep) -> object:
    """A model version and its approval state under the model's policy."""
    found = ledger.model_version(name, version)
    run: Run = ledger.get(found.run_id, Run)
    cost = run_cost(run.resources, ledger.settings.rates)
    labels = ledger.labels(name)
    annotations = {
        "tags": {} if labels is None else labels.tags.get(version, {}),
        "description": "" if labels is None else labels.descriptions.get(version, ""),
    }
    return _version_public(found, found.state(ledger.model(name).policy)) | {"cost": cost} | annotations


@router.get("/{name}/versions/{version}/approval-statement")
def statement_to_sign(
    name: NamePath,
    version: VersionPath,
    caller: CurrentCaller,
    ledger: LedgerDep,
    decision: Annotated[Literal["approve", "reject"], Query()],
    reason: Annotated[str, Query(min_length=1, max_length=2000)],
) -> dict[str, Any]:
    """The exact statement the caller would sign (sign its RFC 8785 form locally)."""
    found = ledger.model_version(name, version)
    return approval_statement(
        model_version_id=str(found.id),
        model_name=name,
        version=version,
        artifact_digest=found.artifact_digest,
        run_digest=found.run_digest,
        decision=decision,
        reason=reason,
        approver=caller.id,
        signed_at=format_timestamp(datetime.now(UTC)),
    )


@router.post("/{name}/versions/{version}/approvals", response_model=DecisionResult, status_code=status.HTTP_201_CREATED)
def decide(
    name: NamePath,
    version: VersionPath,
    body: DecisionCreate,
    caller: ApproverCaller,
    ledger: LedgerDep,
    response: Response,
) -> object:
    """Record a signed approval or rejection (checked against the policy and the approver's key)."""
    decision, result = ledger.decide(
        model_name=name,
        number=version,
        approver_id=caller.id,
        key_id=body.key_id,
        statement=body.statement,
        signature=body.signature,
        actor=caller.actor,
    )
    return {**written(response, result), "decision": decision}


@router.put("/{name}/policy", response_model=ChangeResult)
def set_policy(name: NamePath, body: PolicyBody, caller: PolicyAdmin, ledger: LedgerDep, response: Response) -> object:
    """Change the approval policy of a model (admin); a weaker policy is proposed (202) until another admin
    confirms it."""
    return outcome(response, ledger.request_policy(name, body.model_dump(), "", actor=caller.actor))


@router.post("/{name}/deployment", response_model=WriteResult)
def change_deployment(
    name: NamePath, body: DeploymentChange, caller: OperatorCaller, ledger: LedgerDep, response: Response
) -> object:
    """Champion, challenger, canary, rollback, stop, resume or retire; only approved versions deploy."""
    result = ledger.deploy(
        model_name=name,
        action=body.action,
        number=body.version,
        share=body.share,
        reason=body.reason or body.action,
        actor=caller.actor,
    )
    return written(response, result)


@router.get("/{name}/deployment", response_model=DeploymentPublic)
def get_deployment(name: NamePath, caller: LineageReader, ledger: LedgerDep) -> object:
    """What serves the model now."""
    ledger.model(name)
    try:
        deployment: Deployment = ledger.get(Deployment.create_id(model_name=name), Deployment)
    except NotFound:
        raise NotFound(f"model {name} has never been deployed") from None
    return {
        "model_name": name,
        "champion": deployment.champion.number if deployment.champion else None,
        "challenger": deployment.challenger.number if deployment.challenger else None,
        "canary": deployment.canary.number if deployment.canary else None,
        "canary_share": deployment.canary.share if deployment.canary else None,
        "stopped": deployment.stopped,
        "retired": deployment.retired,
    }
