"""The ML Ledger SDK: a typed HTTP client for the ledger's API (``from mlledger import LedgerClient``)."""

from mlledger.client import LedgerClient, Written

__all__ = ["LedgerClient", "Written"]
