"""The approval policy: its defaults, its validation, its verdict on decision
counts and its fairness gate (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.errors import FairnessBelowPolicy, FairnessReportMissing, InvalidPayload
from domain.model import APPROVED, PENDING, REJECTED, approval_state


def _fairness(*ratios: float, excluded: bool = False) -> FairnessEvidence:
    groups = [
        {"group": f"g{i}", "values": [f"g{i}"], "selection_rate": 0.5, "impact_ratio": r, "excluded": excluded}
        for i, r in enumerate(ratios)
    ]
    summary: dict[str, Any] = {"attributes": [{"name": "sex", "groups": groups}], "intersections": []}
    return FairnessEvidence(("sex",), summary)


def test_the_default_policy_needs_two_independent_approvers_and_lets_a_rejection_block() -> None:
    policy = ApprovalPolicy.from_dict(None)

    assert (policy.required_approvals, policy.separation_of_duties, policy.rejection_blocks) == (2, True, True)


def test_a_policy_survives_its_recorded_form() -> None:
    policy = ApprovalPolicy(required_approvals=3, rejection_blocks=False, min_impact_ratio=None)

    assert ApprovalPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({"quorum": 2}, "policy", id="unknown-field"),
        pytest.param({"required_approvals": 0}, "policy.required_approvals", id="no-approvers"),
        pytest.param({"required_approvals": 11}, "policy.required_approvals", id="too-many-approvers"),
        pytest.param({"required_approvals": True}, "policy.required_approvals", id="boolean-count"),
        pytest.param({"separation_of_duties": "yes"}, "policy.separation_of_duties", id="text-flag"),
        pytest.param({"min_impact_ratio": 0}, "policy.min_impact_ratio", id="zero-ratio"),
        pytest.param({"min_impact_ratio": 1.5}, "policy.min_impact_ratio", id="ratio-over-one"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        ApprovalPolicy.from_dict(data)

    assert caught.value.field == field


def test_fewer_approvals_than_required_leave_a_version_pending() -> None:
    assert approval_state(ApprovalPolicy(required_approvals=2), approvals=1, rejections=0) == PENDING


def test_the_required_number_of_approvals_approves() -> None:
    assert approval_state(ApprovalPolicy(required_approvals=2), approvals=2, rejections=0) == APPROVED


def test_one_rejection_rejects_whatever_the_approvals_when_rejections_block() -> None:
    assert approval_state(ApprovalPolicy(rejection_blocks=True), approvals=5, rejections=1) == REJECTED


def test_a_rejection_is_outvoted_when_rejections_do_not_block() -> None:
    assert approval_state(ApprovalPolicy(rejection_blocks=False), approvals=2, rejections=1) == APPROVED


def test_a_fair_report_lets_an_approval_through() -> None:
    ApprovalPolicy(min_impact_ratio=0.8).check_fairness(_fairness(1.0, 0.9))


def test_an_approval_is_refused_while_a_group_is_under_the_minimum_impact_ratio() -> None:
    with pytest.raises(FairnessBelowPolicy) as caught:
        ApprovalPolicy(min_impact_ratio=0.8).check_fairness(_fairness(1.0, 0.5, 0.7))

    assert caught.value.field == "statement.decision"
    assert "group g1 of sex has an impact ratio of 0.500" in caught.value.detail
    assert "2 group(s) in all" in caught.value.detail


def test_groups_too_small_to_compare_do_not_gate() -> None:
    ApprovalPolicy(min_impact_ratio=0.8).check_fairness(_fairness(0.1, excluded=True))


def test_without_a_minimum_ratio_fairness_does_not_gate() -> None:
    ApprovalPolicy(min_impact_ratio=None).check_fairness(_fairness(0.1))


def test_training_data_without_protected_attributes_has_no_fairness_to_gate_on() -> None:
    ApprovalPolicy(min_impact_ratio=0.8).check_fairness(FairnessEvidence(protected_attributes=(), summary=None))


def test_the_gate_fails_closed_while_the_fairness_report_is_due_but_missing() -> None:
    with pytest.raises(FairnessReportMissing) as caught:
        ApprovalPolicy(min_impact_ratio=0.8).check_fairness(FairnessEvidence(("sex",), None))

    assert caught.value.field == "statement.decision"
    assert "no fairness report yet" in caught.value.detail and "sex" in caught.value.detail


def test_without_a_minimum_ratio_a_missing_report_does_not_gate() -> None:
    ApprovalPolicy(min_impact_ratio=None).check_fairness(FairnessEvidence(("sex",), None))
