"""Every aggregate of the ledger, imported in one place so that their event
types are registered before any stored event is read or verified."""

from __future__ import annotations

from domain.dataset import DatasetVersion
from domain.ledger_key import LedgerKeyring
from domain.principal import Principal

AGGREGATES = (LedgerKeyring, Principal, DatasetVersion)
