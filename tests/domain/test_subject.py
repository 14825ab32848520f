"""Subject: the handle of a data subject's key, and their erasure (no database)."""

from __future__ import annotations

import pytest

from domain.errors import InvalidPayload, RuleViolated, SubjectErased
from domain.subject import Subject

ADMIN = "user:admin"


def _subject() -> Subject:
    return Subject(subject_id="customer-7", key_id="key-7", actor=ADMIN)


def test_a_subject_records_only_the_handle_of_their_key() -> None:
    subject = _subject()

    assert (subject.subject_id, subject.key_id, subject.erased) == ("customer-7", "key-7", False)


def test_a_subject_id_with_control_characters_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        Subject(subject_id="a\tb", key_id="key-7", actor=ADMIN)

    assert caught.value.field == "subject_id"


def test_a_subject_who_was_not_erased_may_be_processed() -> None:
    subject = _subject()

    subject.check_not_erased()

    assert not subject.erased


def test_erasure_records_a_tombstone_naming_the_key() -> None:
    subject = _subject()

    subject.erase("GDPR request 12", actor=ADMIN)

    erased = subject.pending_events[-1]
    assert isinstance(erased, Subject.Erased)
    assert (erased.key_id, erased.reason) == ("key-7", "GDPR request 12")
    assert subject.erased


def test_an_erased_subjects_data_is_no_longer_processed() -> None:
    subject = _subject()
    subject.erase("GDPR request 12", actor=ADMIN)

    with pytest.raises(SubjectErased) as caught:
        subject.check_not_erased()

    assert caught.value.field == "subject_id"


def test_a_subject_is_erased_once() -> None:
    subject = _subject()
    subject.erase("GDPR request 12", actor=ADMIN)

    with pytest.raises(SubjectErased, match="already erased"):
        subject.erase("again", actor=ADMIN)


def test_an_erasure_needs_a_reason() -> None:
    subject = _subject()

    with pytest.raises(InvalidPayload) as caught:
        subject.erase(" ", actor=ADMIN)

    assert caught.value.field == "reason"
    assert not subject.erased


def test_an_erased_subject_is_refused_as_a_rule_violation() -> None:
    assert issubclass(SubjectErased, RuleViolated)
