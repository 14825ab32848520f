"""What the SDK raises."""

from __future__ import annotations

from typing import Any


class LedgerClientError(Exception):
    """The service answered with an RFC 9457 problem."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.field = problem.get("field")
        super().__init__(f"{status} {problem.get('title', 'Error')}: {problem.get('detail', '')}")


class ChangePending(Exception):
    """A privileged request was proposed, not applied: another admin confirms ``change_id``
    (``LedgerClient.confirm_change``), and only then does it take effect."""

    def __init__(self, change_id: str, position: int) -> None:
        self.change_id = change_id
        self.position = position
        super().__init__(f"proposed as privileged change {change_id}: another admin must confirm it")


class InclusionCheckFailed(Exception):
    """A write's receipt, inclusion proof or checkpoint did not verify: the ledger cannot show that it
    logged what it acknowledged."""
