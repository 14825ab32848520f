"""CodeVersion: the exact code a run used (repository, commit, archive, entrypoint)."""

from __future__ import annotations

import re

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.dataset import check_digest
from domain.errors import InvalidPayload

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{7,64}$")
ENTRYPOINT_PATTERN = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")


class CodeVersion(LedgerAggregate):
    """A version of training code."""

    class Registered(Aggregate.Created, LedgerAggregate.Event):
        """A code version was registered."""

        TOPIC = "mlledger.code.Registered.v1"
        repository: str
        commit: str
        archive_digest: str | None
        entrypoint: str | None

    @event(Registered)
    def __init__(
        self, repository: str, commit: str, archive_digest: str | None, entrypoint: str | None, actor: str
    ) -> None:
        self.repository = repository
        self.commit = commit
        self.archive_digest = archive_digest
        self.entrypoint = entrypoint

    @staticmethod
    def check_registration(repository: str, commit: str, archive_digest: str | None, entrypoint: str | None) -> None:
        """Validate before recording."""
        if not repository or not repository.strip() or len(repository) > 500:
            raise InvalidPayload("repository must be 1 to 500 characters", field="repository")
        if not COMMIT_PATTERN.fullmatch(commit):
            raise InvalidPayload("commit must be 7 to 64 lowercase hex digits", field="commit")
        if archive_digest is not None:
            check_digest(archive_digest, "archive_digest")
        if entrypoint is not None and not ENTRYPOINT_PATTERN.fullmatch(entrypoint):
            raise InvalidPayload("entrypoint must look like package.module:function", field="entrypoint")
