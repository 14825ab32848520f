"""The ML Ledger SDK: a typed HTTP client for the ledger's API (``from mlledger import LedgerClient``)."""

from mlledger.client import LedgerClient
from mlledger.errors import ChangePending, InclusionCheckFailed, LedgerClientError
from mlledger.results import (
    DatasetVersionInfo,
    InclusionVerified,
    ModelVersionInfo,
    Page,
    RunComparison,
    RunInfo,
    Written,
)
from mlledger.tracking import ActiveRun, MetricLogger

__all__ = [
    "ActiveRun",
    "ChangePending",
    "DatasetVersionInfo",
    "InclusionCheckFailed",
    "InclusionVerified",
    "LedgerClient",
    "LedgerClientError",
    "MetricLogger",
    "ModelVersionInfo",
    "Page",
    "RunComparison",
    "RunInfo",
    "Written",
]
