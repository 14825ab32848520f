"""Who may do what: the permission table behind every endpoint.

The README prints this table; the role x endpoint test checks the API against it.
"""

from __future__ import annotations

from enum import StrEnum

from domain.roles import Role


class Action(StrEnum):
    """Everything an API caller can ask for, grouped by what it touches."""

    MANAGE_PRINCIPALS = "manage_principals"
    READ_SELF = "read_self"
    READ_LINEAGE = "read_lineage"
    WRITE_LINEAGE = "write_lineage"
    DECIDE_APPROVALS = "decide_approvals"
    MANAGE_DEPLOYMENTS = "manage_deployments"
    MANAGE_POLICY = "manage_policy"
    READ_AUDIT = "read_audit"
    READ_LEDGER_EVENTS = "read_ledger_events"
    PREDICT = "predict"
    LOG_PREDICTIONS = "log_predictions"
    RECORD_OUTCOMES = "record_outcomes"
    OVERRIDE_DECISIONS = "override_decisions"
    READ_DECISIONS = "read_decisions"
    ERASE_SUBJECTS = "erase_subjects"
    CHECK_MONITORING = "check_monitoring"
    EXPORT = "export"
    READ_EXPORTS = "read_exports"
    EXECUTE_RUNS = "execute_runs"


ALL_ROLES = frozenset(Role)
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.MANAGE_PRINCIPALS: frozenset({Role.ADMIN}),
    Action.READ_SELF: ALL_ROLES,
    Action.READ_LINEAGE: frozenset({Role.ADMIN, Role.DATA_SCIENTIST, Role.APPROVER, Role.OPERATOR, Role.AUDITOR}),
    Action.WRITE_LINEAGE: frozenset({Role.ADMIN, Role.DATA_SCIENTIST}),
    Action.DECIDE_APPROVALS: frozenset({Role.APPROVER}),
    Action.MANAGE_DEPLOYMENTS: frozenset({Role.ADMIN, Role.OPERATOR}),
    Action.MANAGE_POLICY: frozenset({Role.ADMIN}),
    Action.READ_AUDIT: frozenset({Role.ADMIN, Role.AUDITOR}),
    Action.READ_LEDGER_EVENTS: frozenset({Role.ADMIN, Role.AUDITOR, Role.REGULATOR}),
    Action.PREDICT: frozenset({Role.ADMIN, Role.PREDICTOR}),
    Action.LOG_PREDICTIONS: frozenset({Role.ADMIN, Role.PREDICTOR}),
    Action.RECORD_OUTCOMES: frozenset({Role.ADMIN, Role.PREDICTOR}),
    Action.OVERRIDE_DECISIONS: frozenset({Role.ADMIN, Role.OPERATOR, Role.APPROVER}),
    Action.READ_DECISIONS: frozenset({Role.ADMIN, Role.AUDITOR, Role.OPERATOR}),
    Action.ERASE_SUBJECTS: frozenset({Role.ADMIN}),
    Action.CHECK_MONITORING: frozenset({Role.ADMIN, Role.OPERATOR}),
    Action.EXPORT: frozenset({Role.ADMIN, Role.AUDITOR}),
    Action.READ_EXPORTS: frozenset({Role.ADMIN, Role.AUDITOR, Role.REGULATOR}),
    Action.EXECUTE_RUNS: frozenset({Role.RUNNER}),
}


def allowed(action: Action, roles: list[str]) -> bool:
    """True when any of ``roles`` may perform ``action``."""
    permitted = PERMISSIONS[action]
    return any(role in permitted for role in roles)
