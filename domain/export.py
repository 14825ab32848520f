"""Export: a bundle of a model's signed history handed to an auditor or a regulator.

An export is recorded before its bundle is sealed: ``Created`` names the model,
the scope (time window and how predictions were chosen), whom the bundle is
shared with, a commitment to exactly the events it carries (their count and a
digest over their positions and hashes) and the digest of every document the
bundle adds (reports, manifests, provenance). The ``Created`` event itself
travels in the bundle, covered by the transparency log, so a verifier holding
only the ledger's public key learns that no event was left out and no document
replaced. ``Packed`` then records the finished archive's digest and size, and
every download is a ``Downloaded`` event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.dataset import check_digest
from domain.errors import ExportAlreadyPacked, ExportNotPacked, InvalidPayload
from domain.integrity.sealing import parse_timestamp
from domain.roles import Role
from domain.statistics.series import check_name

PREDICTIONS_ALL, PREDICTIONS_SAMPLE, PREDICTIONS_NONE = "all", "sample", "none"
PREDICTION_MODES = (PREDICTIONS_ALL, PREDICTIONS_SAMPLE, PREDICTIONS_NONE)
SAMPLE_MAX = 1_000_000
SEES_EVERY_EXPORT = frozenset({Role.ADMIN.value, Role.AUDITOR.value})


def check_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """Validate an export scope: ``{"from", "to", "predictions", "sample_size"}``.

    ``from``/``to`` are RFC 3339 UTC timestamps (``2026-11-22T10:00:00.000000Z``)
    or None for an open end; ``predictions`` is all, sample or none;
    ``sample_size`` is how many predictions a sample holds at most.
    """
    expected = {"from", "to", "predictions", "sample_size"}
    if not isinstance(scope, dict) or set(scope) != expected:
        raise InvalidPayload(f"scope must have exactly the fields {sorted(expected)}", field="scope")
    for end in ("from", "to"):
        value = scope[end]
        if value is not None:
            try:
                parse_timestamp(value)
            except (TypeError, ValueError):
                raise InvalidPayload(
                    f"{end} must be an RFC 3339 UTC time like 2026-11-22T10:00:00.000000Z", field=end
                ) from None
    if scope["from"] is not None and scope["to"] is not None and scope["from"] > scope["to"]:
        raise InvalidPayload("from is later than to", field="from")
    if scope["predictions"] not in PREDICTION_MODES:
        raise InvalidPayload(f"predictions must be one of {', '.join(PREDICTION_MODES)}", field="predictions")
    size = scope["sample_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= SAMPLE_MAX:
        raise InvalidPayload(f"sample_size must be between 1 and {SAMPLE_MAX}", field="sample_size")
    return scope


def events_commitment(events: Iterable[tuple[int, str]]) -> str:
    """``sha256:`` over every (position, event hash) pair, in ledger order.

    Each pair contributes its position as 8 big-endian bytes and the 32 raw
    bytes of the event hash, so the digest pins which events a bundle holds
    and their order. ``events`` are (notification id, hex hash).
    """
    hasher = hashlib.sha256()
    for position, event_hash in events:
        hasher.update(position.to_bytes(8, "big") + bytes.fromhex(event_hash))
    return "sha256:" + hasher.hexdigest()


class Export(LedgerAggregate):
    """One export bundle: what it holds, whom it is for, who downloaded it."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """A bundle's contents were fixed (before the archive is written)."""

        TOPIC = "mlledger.export.Created.v1"
        model_name: str
        scope: dict[str, Any]
        shared_with: list[str]
        events: dict[str, Any]
        files: dict[str, str]

    class Packed(LedgerAggregate.Event):
        """The archive was written: its digest and size."""

        TOPIC = "mlledger.export.Packed.v1"
        bundle_digest: str
        size: int

    class Downloaded(LedgerAggregate.Event):
        """Someone fetched the archive."""

        TOPIC = "mlledger.export.Downloaded.v1"
        by: str

    @event(Created)
    def __init__(
        self,
        model_name: str,
        scope: dict[str, Any],
        shared_with: list[str],
        events: dict[str, Any],
        files: dict[str, str],
        actor: str,
    ) -> None:
        self.model_name = model_name
        self.scope = scope
        self.shared_with = list(shared_with)
        self.event_count = int(events["count"])
        self.files = dict(files)
        self.created_by = actor
        self.bundle_digest: str | None = None
        self.size: int | None = None
        self.downloads = 0

    @classmethod
    def create(
        cls,
        *,
        model_name: str,
        scope: dict[str, Any],
        shared_with: list[str],
        event_count: int,
        events_digest: str,
        files: dict[str, str],
        actor: str,
    ) -> Export:
        """Record a new export after checking its fields."""
        check_name(model_name, "model")
        check_scope(scope)
        if not isinstance(shared_with, list) or not all(isinstance(p, str) and p for p in shared_with):
            raise InvalidPayload("shared_with must be a list of principal ids", field="shared_with")
        if isinstance(event_count, bool) or not isinstance(event_count, int) or event_count < 1:
            raise InvalidPayload("an export holds at least one event", field="events.count")
        check_digest(events_digest, "events.digest")
        for path, digest in files.items():
            check_digest(digest, f"files.{path}")
        return cls(
            model_name=model_name,
            scope=scope,
            shared_with=sorted(set(shared_with)),
            events={"count": event_count, "digest": events_digest},
            files=dict(sorted(files.items())),
            actor=actor,
        )

    def pack(self, bundle_digest: str, size: int, actor: str) -> None:
        """Record the written archive, once."""
        if self.bundle_digest is not None:
            raise ExportAlreadyPacked("this export's archive was already recorded", field="bundle_digest")
        check_digest(bundle_digest, "bundle_digest")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidPayload("size must be a positive number of bytes", field="size")
        self._pack(bundle_digest=bundle_digest, size=size, actor=actor)

    @event(Packed)
    def _pack(self, bundle_digest: str, size: int, actor: str) -> None:
        self.bundle_digest = bundle_digest
        self.size = size

    def visible_to(self, principal_id: str, roles: Iterable[str]) -> bool:
        """Admins and auditors see every export; a regulator only those shared with them."""
        held = set(roles)
        if held & SEES_EVERY_EXPORT:
            return True
        return Role.REGULATOR.value in held and principal_id in self.shared_with

    def record_download(self, by: str, actor: str) -> None:
        """Record a download of the packed archive."""
        if self.bundle_digest is None:
            raise ExportNotPacked("this export has no archive yet", field="export_id")
        self._download(by=by, actor=actor)

    @event(Downloaded)
    def _download(self, by: str, actor: str) -> None:
        self.downloads += 1
