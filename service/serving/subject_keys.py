"""Subject keys: each data subject's inputs are encrypted with the subject's own key.

A request's subjects are checked (an erased subject's data is not processed
again) and their keys found, or issued for a subject seen the first time. The
new subject is recorded with the request's predictions; until that request is
over, a key it issued is not used by other requests of this process: if the
request fails, its key is destroyed, and nobody else may have encrypted with
it. Requests of one batch that would use such a key are served after the
batch (:meth:`SubjectKeys.issued_by_others`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import Future, wait
from typing import Any, Protocol

from domain.errors import NotFound, SubjectErased
from domain.prediction import check_subject_id
from domain.subject import Subject
from service.application.ledger_core import LedgerCore
from service.serving.prediction_request import COMMIT_TIMEOUT
from service.serving.vault import SubjectKey, SubjectVault


class _AboutSubject(Protocol):
    @property
    def subject_id(self) -> str | None: ...


def subjects_of(records: Sequence[_AboutSubject]) -> dict[str, int]:
    """The request's data subjects (checked ids), each with the index of its first record."""
    subjects: dict[str, int] = {}
    for i, record in enumerate(records):
        if record.subject_id is not None:
            subjects.setdefault(check_subject_id(record.subject_id, field=f"records.{i}.subject_id"), i)
    return subjects


class SubjectKeys:
    """Finds and issues the keys of a request's subjects; destroys those a failed request issued."""

    def __init__(self, ledger: LedgerCore, vault: SubjectVault) -> None:
        self._ledger = ledger
        self._vault = vault
        self._lock = threading.Lock()
        self._issuing: dict[str, Future[Any]] = {}  # subject -> the request recording it, until it is over

    def keys(self, subjects: dict[str, int]) -> dict[str, SubjectKey]:
        """Each subject's key (issued now for a new subject); refuse an erased subject.

        A key another request of this process issued is used only once that
        request is durable (its subject recorded) or failed (its key destroyed).
        """
        for subject in subjects:
            issuing = self._issuing.get(subject)
            if issuing is not None:
                wait([issuing], timeout=COMMIT_TIMEOUT)
        keys: dict[str, SubjectKey] = {}
        for subject, i in subjects.items():
            found = self._vault.key_of(subject)
            if found is not None:
                keys[subject] = found
                continue
            try:
                self._ledger.get(Subject.create_id(subject_id=subject), Subject)
            except NotFound:
                continue  # a new subject: its key is issued below
            # A subject the ledger knows but whose key is gone was erased.
            raise SubjectErased(
                f"data subject {subject} was erased; their data is no longer processed",
                field=f"records.{i}.subject_id",
            )
        for subject in subjects:
            if subject not in keys:
                keys[subject] = self._vault.issue(subject)
        return keys

    @staticmethod
    def issued_by_others(subjects: Collection[str], issued_in_batch: set[str]) -> bool:
        """Whether the request has a subject whose key another request of its batch issued (it waits for that one)."""
        return not issued_in_batch.isdisjoint(subjects)

    def hold_new(self, keys: dict[str, SubjectKey], request: Future[Any], issued_in_batch: set[str]) -> None:
        """The keys ``request`` issued are its own until it is over (added to ``issued_in_batch`` too)."""
        for subject, key in keys.items():
            if key.issued_now:
                issued_in_batch.add(subject)
                with self._lock:
                    self._issuing[subject] = request
                request.add_done_callback(functools.partial(self._released, subject))

    def destroy_new(self, keys: dict[str, SubjectKey]) -> None:
        """A request failed: the keys of the subjects whose first record it had are not kept."""
        for subject, key in keys.items():
            if key.issued_now:
                self._vault.destroy(subject)

    @staticmethod
    def new_subjects(keys: dict[str, SubjectKey], actor: str) -> list[Subject]:
        """The subjects to record with the request's predictions: those whose keys it issued."""
        return [
            Subject(subject_id=subject, key_id=key.key_id, actor=actor)
            for subject, key in keys.items()
            if key.issued_now
        ]

    def _released(self, subject: str, done: Future[Any]) -> None:
        """The request that issued the subject's key is over: later requests use the key (or a new one)."""
        with self._lock:
            if self._issuing.get(subject) is done:
                del self._issuing[subject]
