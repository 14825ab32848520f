"""Report: a signed document about a model version (its explanations, its
fairness, its training data's reference profile), computed off the request
path after registration.

The event holds the report's JSON summary and the digests of its attachments
(plots, HTML) in the content-addressed blob store, so an export can prove that
the files it ships are the ones the ledger recorded. A report may be computed
again (new data, a fix); each publication is a new event of the same aggregate.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.dataset import check_digest
from domain.errors import UnknownReportKind
from domain.statistics.series import series_id

EXPLANATIONS, FAIRNESS, REFERENCE_PROFILE = "explanations", "fairness", "reference_profile"
KINDS = (EXPLANATIONS, FAIRNESS, REFERENCE_PROFILE)


class Report(LedgerAggregate):
    """One kind of report about one model version."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The first report of this kind for the version."""

        TOPIC = "mlledger.report.Created.v1"
        kind: str
        model_name: str
        model_version_id: str
        number: int

    class Published(LedgerAggregate.Event):
        """A computed report: its summary and the digests of its attachments."""

        TOPIC = "mlledger.report.Published.v1"
        summary: dict[str, Any]
        attachments: dict[str, str]
        computed_from: dict[str, Any]

    @staticmethod
    def create_id(model_version_id: str, kind: str, **_: object) -> uuid.UUID:
        """One aggregate per (version, kind)."""
        return series_id("report", f"{model_version_id}\n{kind}")

    @staticmethod
    def check_kind(kind: str) -> None:
        """Reports are of the known kinds only."""
        if kind not in KINDS:
            raise UnknownReportKind(f"report kind must be one of {', '.join(KINDS)}", field="kind")

    @event(Created)
    def __init__(self, kind: str, model_name: str, model_version_id: str, number: int, actor: str) -> None:
        self.check_kind(kind)
        self.kind = kind
        self.model_name = model_name
        self.model_version_id = model_version_id
        self.number = number
        self.summary: dict[str, Any] = {}
        self.attachments: dict[str, str] = {}
        self.publications = 0

    def publish(
        self, summary: dict[str, Any], attachments: dict[str, str], computed_from: dict[str, Any], actor: str
    ) -> None:
        """Record a computed report."""
        for name, digest in attachments.items():
            check_digest(digest, f"attachments.{name}")
        self._publish(summary=summary, attachments=dict(attachments), computed_from=computed_from, actor=actor)

    @event(Published)
    def _publish(
        self, summary: dict[str, Any], attachments: dict[str, str], computed_from: dict[str, Any], actor: str
    ) -> None:
        self.summary = summary
        self.attachments = attachments
        self.publications += 1
