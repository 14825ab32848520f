"""Four-eyes on privileged changes: proposed by one admin, confirmed by another;
the bootstrap in which a fresh ledger's only admin acts alone (no database)."""

from __future__ import annotations

import pytest

from domain.approval import ApprovalPolicy
from domain.errors import ChangeNotPending, InvalidPayload, ProposerCannotConfirm
from domain.privileged_change import (
    CONFIRMED,
    GRANT_ROLE,
    PENDING,
    WITHDRAWN,
    Bootstrap,
    PrivilegedChange,
    closes_bootstrap,
    is_privileged_role,
)

FIRST, SECOND = "admin-1", "admin-2"


def _proposal() -> PrivilegedChange:
    return PrivilegedChange(
        kind=GRANT_ROLE, details={"principal_id": "p", "role": "approver"}, reason="new validator", actor=FIRST
    )


def test_a_proposal_is_pending_and_names_its_proposer() -> None:
    change = _proposal()

    assert (change.status, change.proposer, change.confirmer) == (PENDING, FIRST, None)


def test_another_admin_confirms_a_proposal() -> None:
    change = _proposal()

    change.confirm(actor=SECOND)

    assert (change.status, change.confirmer) == (CONFIRMED, SECOND)
    assert isinstance(change.pending_events[-1], PrivilegedChange.Confirmed)


def test_the_proposer_cannot_confirm_their_own_proposal() -> None:
    change = _proposal()

    with pytest.raises(ProposerCannotConfirm):
        change.confirm(actor=FIRST)

    assert change.status == PENDING


def test_a_change_is_confirmed_once_and_never_after_a_withdrawal() -> None:
    confirmed, withdrawn = _proposal(), _proposal()
    confirmed.confirm(actor=SECOND)
    withdrawn.withdraw("not needed", actor=FIRST)

    with pytest.raises(ChangeNotPending):
        confirmed.confirm(actor="admin-3")
    with pytest.raises(ChangeNotPending):
        withdrawn.confirm(actor=SECOND)
    assert withdrawn.status == WITHDRAWN


def test_an_unknown_kind_of_change_is_refused() -> None:
    with pytest.raises(InvalidPayload):
        PrivilegedChange(kind="become_god", details={}, reason="", actor=FIRST)


def test_admin_approver_and_runner_are_the_privileged_roles_and_only_admin_and_approver_end_the_bootstrap() -> None:
    roles = ("admin", "approver", "runner", "operator", "data_scientist", "predictor")
    assert [r for r in roles if is_privileged_role(r)] == ["admin", "approver", "runner"]
    assert [r for r in roles if closes_bootstrap(r)] == ["admin", "approver"]


def test_only_the_bootstrap_admin_acts_alone_and_only_while_the_bootstrap_is_open() -> None:
    bootstrap = Bootstrap(admin_id=FIRST, actor="system:ledger")

    assert bootstrap.lets_act_alone(FIRST) and not bootstrap.lets_act_alone(SECOND)
    bootstrap.close("approver granted", actor=FIRST)
    bootstrap.close("again: nothing more is recorded", actor=FIRST)

    assert not bootstrap.lets_act_alone(FIRST)
    assert sum(isinstance(e, Bootstrap.Closed) for e in bootstrap.pending_events) == 1


@pytest.mark.parametrize(
    ("new", "weaker"),
    [
        pytest.param({"required_approvals": 1}, ["required_approvals 2 -> 1"], id="fewer-approvals"),
        pytest.param({"separation_of_duties": False}, ["separation_of_duties turned off"], id="no-separation"),
        pytest.param({"rejection_blocks": False}, ["rejection_blocks turned off"], id="rejections-outvoted"),
        pytest.param({"min_impact_ratio": 0.5}, ["min_impact_ratio 0.8 -> 0.5"], id="lower-ratio"),
        pytest.param({"min_impact_ratio": None}, ["min_impact_ratio 0.8 -> None"], id="no-fairness-gate"),
        pytest.param({"required_approvals": 3, "min_impact_ratio": 0.9}, [], id="stricter"),
        pytest.param({"retrain_on_drift": True}, [], id="monitoring-only"),
    ],
)
def test_a_policy_knows_what_a_new_one_relaxes(new: dict[str, object], weaker: list[str]) -> None:
    assert ApprovalPolicy().weakened_by(ApprovalPolicy.from_dict(new)) == weaker


def test_setting_a_fairness_minimum_where_there_was_none_is_not_a_weakening() -> None:
    assert ApprovalPolicy(min_impact_ratio=None).weakened_by(ApprovalPolicy(min_impact_ratio=0.8)) == []
