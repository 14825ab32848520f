"""Who served a model in which role at a past moment: the deployment replayed from its events (no database)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from support.model_builders import approved_version, model

from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.deployment import Deployment
from domain.deployment_history import DeploymentHistory
from domain.errors import NotServedInRole

OPERATOR = "user:oscar"
POLICY = ApprovalPolicy()
NO_REPORT_DUE = FairnessEvidence()


def _history() -> tuple[DeploymentHistory, list[Deployment.Event], str, str]:
    """v1 champion, then v2 canary, then stopped, resumed, then v2 champion."""
    credit = model()
    first, second = approved_version(credit), approved_version(credit)
    deployment = Deployment(model_name="credit", actor=OPERATOR)
    deployment.set_champion(first, POLICY, "first release", actor=OPERATOR, fairness=NO_REPORT_DUE)
    deployment.set_canary(second, 0.1, POLICY, actor=OPERATOR, fairness=NO_REPORT_DUE)
    deployment.stop("incident", actor=OPERATOR)
    deployment.resume("closed", actor=OPERATOR)
    deployment.set_champion(second, POLICY, "promoted", actor=OPERATOR, fairness=NO_REPORT_DUE)
    events = list(deployment.collect_events())
    return DeploymentHistory.replay("credit", events), events, str(first.id), str(second.id)


def test_each_moment_sees_the_state_its_last_event_left() -> None:
    history, events, first, second = _history()
    created, champion, canary, stopped, _resumed, promoted = events

    assert history.at(created.timestamp - timedelta(microseconds=1)) is None
    assert history.at(champion.timestamp).champion == first  # type: ignore[union-attr]
    during_canary = history.at(canary.timestamp)
    assert during_canary is not None and during_canary.canary == second and not during_canary.stopped
    assert history.at(stopped.timestamp).stopped  # type: ignore[union-attr]
    assert history.at(promoted.timestamp + timedelta(days=1)).champion == second  # type: ignore[union-attr]


def test_a_version_served_in_its_role_passes_and_any_other_role_or_moment_is_refused() -> None:
    history, events, first, second = _history()
    created, champion, canary, stopped, _resumed, promoted = events

    history.check_served(first, 1, "champion", champion.timestamp, field="at")
    history.check_served(second, 2, "canary", canary.timestamp, field="at")
    history.check_served(second, 2, "champion", promoted.timestamp, field="at")
    refusals = [
        (first, 1, "champion", created.timestamp - timedelta(microseconds=1), "not deployed yet"),
        (second, 2, "champion", canary.timestamp, "was not the champion"),
        (first, 1, "canary", canary.timestamp, "was not the canary"),
        (first, 1, "champion", stopped.timestamp, "was stopped"),
        (first, 1, "champion", promoted.timestamp, "was not the champion"),
        (first, 1, "challenger", champion.timestamp, "was not the challenger"),
    ]
    for version_id, number, role, moment, said in refusals:
        with pytest.raises(NotServedInRole) as refused:
            history.check_served(version_id, number, role, moment, field="records.0.predicted_at")
        assert said in refused.value.detail and refused.value.field == "records.0.predicted_at"
