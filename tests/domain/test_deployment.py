"""Deployment: only approved versions serve; champion, challenger, canary,
rollback to a past champion, the kill switch and retirement (no database)."""

from __future__ import annotations

import pytest
from support.model_builders import Approver, approved_version, model, registered_version

from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.deployment import CanarySlot, Deployment, Slot
from domain.errors import (
    AlreadyChampion,
    ApprovalRequired,
    CanaryNeedsChampion,
    DeploymentAlreadyStopped,
    DeploymentNotStopped,
    DeploymentRetired,
    DeploymentStopped,
    FairnessBelowPolicy,
    FairnessReportMissing,
    InvalidCanaryShare,
    NoChampion,
    NoChampionToRollBackFrom,
    NotAPastChampion,
    VersionOfAnotherModel,
    VersionRejected,
)
from domain.model import Model, ModelVersion

OPERATOR = "user:oscar"
POLICY = ApprovalPolicy()
NO_REPORT_DUE = FairnessEvidence()  # training data that declares no protected attribute


def _deployment(name: str = "credit") -> Deployment:
    return Deployment(model_name=name, actor=OPERATOR)


def _slot(version: ModelVersion) -> Slot:
    return Slot(str(version.id), version.number)


def _two_approved() -> tuple[Model, ModelVersion, ModelVersion]:
    credit = model()
    return credit, approved_version(credit), approved_version(credit)


def _serving(version: ModelVersion) -> Deployment:
    deployment = _deployment()
    deployment.set_champion(version, POLICY, "first release", actor=OPERATOR, fairness=NO_REPORT_DUE)
    return deployment


# -- Only approved versions serve --------------------------------------------------


def test_a_new_deployment_serves_nothing_yet() -> None:
    deployment = _deployment()

    assert (deployment.champion, deployment.challenger, deployment.canary) == (None, None, None)
    assert not deployment.stopped and not deployment.retired


def test_an_approved_version_becomes_the_champion() -> None:
    version = approved_version()
    deployment = _deployment()

    deployment.set_champion(version, POLICY, "first release", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.champion == _slot(version)
    assert isinstance(deployment.pending_events[-1], Deployment.ChampionSet)


def test_a_version_without_enough_approvals_cannot_be_deployed() -> None:
    version = registered_version()
    Approver("alice").decide(version)
    deployment = _deployment()

    with pytest.raises(ApprovalRequired) as caught:
        deployment.set_champion(version, POLICY, "too early", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert "has 1 of 2 required approvals" in caught.value.detail
    assert deployment.champion is None


def test_a_rejected_version_cannot_be_deployed() -> None:
    version = registered_version()
    Approver("alice").decide(version, "reject")
    deployment = _deployment()

    with pytest.raises(VersionRejected) as caught:
        deployment.set_champion(version, POLICY, "anyway", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert "was rejected" in caught.value.detail
    assert deployment.champion is None


def test_a_rejected_version_is_refused_as_approval_required() -> None:
    assert issubclass(VersionRejected, ApprovalRequired)


def test_a_version_of_another_model_cannot_be_deployed() -> None:
    version = approved_version(model("fraud"))

    with pytest.raises(VersionOfAnotherModel) as caught:
        _deployment("credit").set_champion(version, POLICY, "wrong model", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert caught.value.field == "version"


def test_the_champion_cannot_be_made_champion_again() -> None:
    version = approved_version()
    deployment = _serving(version)

    with pytest.raises(AlreadyChampion):
        deployment.set_champion(version, POLICY, "again", actor=OPERATOR, fairness=NO_REPORT_DUE)


def test_a_new_champion_moves_the_old_one_to_the_past_champions() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)

    deployment.set_champion(second, POLICY, "better", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.champion == _slot(second)
    assert deployment.past_champions == [_slot(first)]


def _unfair() -> FairnessEvidence:
    groups = [
        {"group": "f", "values": ["f"], "selection_rate": 0.2, "impact_ratio": 0.4, "excluded": False},
        {"group": "m", "values": ["m"], "selection_rate": 0.5, "impact_ratio": 1.0, "excluded": False},
    ]
    return FairnessEvidence(("sex",), {"attributes": [{"name": "sex", "groups": groups}], "intersections": []})


@pytest.mark.parametrize("action", ["champion", "challenger", "canary", "rollback"])
def test_deploying_an_approved_version_whose_fairness_report_is_due_but_missing_is_refused(action: str) -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_champion(second, POLICY, "better", actor=OPERATOR, fairness=NO_REPORT_DUE)
    version = first if action == "rollback" else approved_version(model())
    missing = FairnessEvidence(protected_attributes=("sex",), summary=None)
    act = {
        "champion": lambda: deployment.set_champion(version, POLICY, "go", actor=OPERATOR, fairness=missing),
        "challenger": lambda: deployment.set_challenger(version, POLICY, actor=OPERATOR, fairness=missing),
        "canary": lambda: deployment.set_canary(version, 0.1, POLICY, actor=OPERATOR, fairness=missing),
        "rollback": lambda: deployment.roll_back(version, POLICY, "back", actor=OPERATOR, fairness=missing),
    }[action]
    before = len(deployment.pending_events)

    with pytest.raises(FairnessReportMissing) as caught:
        act()

    assert caught.value.field == "version"
    assert len(deployment.pending_events) == before
    assert deployment.champion == _slot(second)


def test_deploying_a_version_whose_fairness_report_fell_under_the_policy_is_refused() -> None:
    version = approved_version()

    with pytest.raises(FairnessBelowPolicy):
        _deployment().set_champion(version, POLICY, "go", actor=OPERATOR, fairness=_unfair())


def test_a_policy_without_a_minimum_impact_ratio_deploys_without_a_fairness_report() -> None:
    version = approved_version()
    deployment = _deployment()
    missing = FairnessEvidence(protected_attributes=("sex",), summary=None)

    deployment.set_champion(version, ApprovalPolicy(min_impact_ratio=None), "go", actor=OPERATOR, fairness=missing)

    assert deployment.champion == _slot(version)


# -- Challenger and canary ---------------------------------------------------------


def test_an_approved_version_can_predict_in_shadow() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)

    deployment.set_challenger(second, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.challenger == _slot(second)


def test_clearing_the_challenger_leaves_none() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_challenger(second, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.set_challenger(None, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.challenger is None


def test_an_unapproved_challenger_is_refused() -> None:
    deployment = _serving(approved_version())

    with pytest.raises(ApprovalRequired):
        deployment.set_challenger(registered_version(), POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)


def test_a_canary_takes_its_share_of_traffic() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)

    deployment.set_canary(second, 0.1, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.canary == CanarySlot(str(second.id), second.number, 0.1)


def test_clearing_the_canary_leaves_none() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_canary(second, 0.1, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.set_canary(None, 0.0, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.canary is None


def test_a_canary_needs_a_champion() -> None:
    deployment = _deployment()

    with pytest.raises(CanaryNeedsChampion):
        deployment.set_canary(approved_version(), 0.1, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)


@pytest.mark.parametrize("share", [0, 1, -0.5, 1.5, True, "0.5"])
def test_a_canary_share_outside_zero_and_one_is_refused(share: object) -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)

    with pytest.raises(InvalidCanaryShare) as caught:
        deployment.set_canary(second, share, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)  # type: ignore[arg-type]

    assert caught.value.field == "share"


def test_promoting_the_challenger_clears_the_challenger_slot() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_challenger(second, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.set_champion(second, POLICY, "it won", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert (deployment.champion, deployment.challenger) == (_slot(second), None)


def test_promoting_the_canary_clears_the_canary_slot() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_canary(second, 0.2, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.set_champion(second, POLICY, "it won", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert (deployment.champion, deployment.canary) == (_slot(second), None)


# -- Rollback ----------------------------------------------------------------------


def test_a_rollback_returns_to_a_past_champion() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_champion(second, POLICY, "better", actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.roll_back(first, POLICY, "worse in production", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.champion == _slot(first)
    rolled = deployment.pending_events[-1]
    assert isinstance(rolled, Deployment.RolledBack)
    assert (rolled.number, rolled.from_number) == (first.number, second.number)


def test_a_rollback_only_goes_to_a_past_champion() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)

    with pytest.raises(NotAPastChampion):
        deployment.roll_back(second, POLICY, "never served", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.champion == _slot(first)


def test_a_rollback_needs_a_champion_to_roll_back_from() -> None:
    deployment = _deployment()

    with pytest.raises(NoChampionToRollBackFrom):
        deployment.roll_back(approved_version(), POLICY, "nothing served", actor=OPERATOR, fairness=NO_REPORT_DUE)


def test_a_rollback_to_a_version_rejected_since_is_refused() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_champion(second, POLICY, "better", actor=OPERATOR, fairness=NO_REPORT_DUE)
    Approver("carol").decide(first, "reject", policy=ApprovalPolicy(rejection_blocks=False))

    with pytest.raises(VersionRejected):
        deployment.roll_back(first, POLICY, "back", actor=OPERATOR, fairness=NO_REPORT_DUE)

    assert deployment.champion == _slot(second)


# -- Kill switch and retirement ----------------------------------------------------


def test_a_served_deployment_serves_predictions() -> None:
    deployment = _serving(approved_version())

    deployment.check_serves_predictions()

    assert deployment.champion is not None


def test_a_stopped_deployment_serves_no_predictions() -> None:
    deployment = _serving(approved_version())

    deployment.stop("bias found", actor=OPERATOR)

    assert deployment.stopped and deployment.stop_reason == "bias found"
    with pytest.raises(DeploymentStopped, match="bias found"):
        deployment.check_serves_predictions()


def test_a_deployment_without_a_champion_serves_no_predictions() -> None:
    with pytest.raises(NoChampion):
        _deployment().check_serves_predictions()


def test_a_retired_deployment_serves_no_predictions() -> None:
    deployment = _serving(approved_version())

    deployment.retire("replaced", actor=OPERATOR)

    with pytest.raises(DeploymentStopped, match="retired"):
        deployment.check_serves_predictions()


def test_a_stopped_deployment_cannot_be_stopped_again() -> None:
    deployment = _serving(approved_version())
    deployment.stop("bias found", actor=OPERATOR)

    with pytest.raises(DeploymentAlreadyStopped):
        deployment.stop("again", actor=OPERATOR)


def test_a_resumed_deployment_serves_again() -> None:
    deployment = _serving(approved_version())
    deployment.stop("bias found", actor=OPERATOR)

    deployment.resume("fixed", actor=OPERATOR)

    assert not deployment.stopped
    deployment.check_serves_predictions()


def test_only_a_stopped_deployment_can_be_resumed() -> None:
    deployment = _serving(approved_version())

    with pytest.raises(DeploymentNotStopped):
        deployment.resume("nothing to resume", actor=OPERATOR)


def test_retiring_clears_every_slot() -> None:
    _, first, second = _two_approved()
    deployment = _serving(first)
    deployment.set_challenger(second, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)

    deployment.retire("replaced", actor=OPERATOR)

    assert deployment.retired
    assert (deployment.champion, deployment.challenger, deployment.canary) == (None, None, None)


@pytest.mark.parametrize("command", ["champion", "challenger", "canary", "stop", "resume", "retire"])
def test_a_retired_deployment_takes_no_more_changes(command: str) -> None:
    version = approved_version()
    deployment = _serving(version)
    deployment.retire("replaced", actor=OPERATOR)
    commands = {
        "champion": lambda: deployment.set_champion(version, POLICY, "back", actor=OPERATOR, fairness=NO_REPORT_DUE),
        "challenger": lambda: deployment.set_challenger(None, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE),
        "canary": lambda: deployment.set_canary(None, 0.0, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE),
        "stop": lambda: deployment.stop("stop", actor=OPERATOR),
        "resume": lambda: deployment.resume("resume", actor=OPERATOR),
        "retire": lambda: deployment.retire("again", actor=OPERATOR),
    }
    events = len(deployment.pending_events)

    with pytest.raises(DeploymentRetired):
        commands[command]()

    assert len(deployment.pending_events) == events
