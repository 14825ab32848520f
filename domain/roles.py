"""The roles a principal may hold (DESIGN section 7)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a principal is allowed to do; each grant is itself an event."""

    ADMIN = "admin"
    DATA_SCIENTIST = "data_scientist"
    APPROVER = "approver"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    REGULATOR = "regulator"
    PREDICTOR = "predictor"
    RUNNER = "runner"
