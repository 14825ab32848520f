"""The ledger application: command handlers over the sealed event store.

Routers and the CLI call these methods; the aggregates enforce the rules; the
event store seals, chains and records. Every write returns the ledger position
(the notification id of its last event) so clients can read their own writes.
"""

from __future__ import annotations

from service.application.commands.annotations import AnnotationCommands
from service.application.commands.decisions import DecisionCommands
from service.application.commands.four_eyes import FourEyesCommands
from service.application.commands.governance import GovernanceCommands
from service.application.commands.identity import IdentityCommands
from service.application.commands.lineage import LineageCommands
from service.application.commands.runs import RunnerCommands
from service.application.commands.tracking import TrackingCommands
from service.application.ledger_core import SYSTEM_ACTOR, KeyNotInKeyring, LedgerCore, Written


class Ledger(
    IdentityCommands,
    FourEyesCommands,
    LineageCommands,
    RunnerCommands,
    AnnotationCommands,
    TrackingCommands,
    GovernanceCommands,
    DecisionCommands,
    LedgerCore,
):
    """Every command of ML Ledger."""

    name = "mlledger"  # names the PostgreSQL table: mlledger_events


__all__ = ["SYSTEM_ACTOR", "KeyNotInKeyring", "Ledger", "Written"]
