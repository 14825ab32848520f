"""The Report aggregate: its kinds and its publications (no database)."""

from __future__ import annotations

import pytest

from domain.errors import InvalidPayload, UnknownReportKind
from domain.report import EXPLANATIONS, FAIRNESS, Report

SYSTEM = "system"
DIGEST = "sha256:" + "ab" * 32


def _report(kind: str = EXPLANATIONS) -> Report:
    return Report(kind=kind, model_name="credit", model_version_id="version-1", number=1, actor=SYSTEM)


def test_a_report_is_one_aggregate_per_version_and_kind() -> None:
    assert _report(FAIRNESS).id == Report.create_id(model_version_id="version-1", kind=FAIRNESS)
    assert Report.create_id(model_version_id="version-1", kind=EXPLANATIONS) != Report.create_id(
        model_version_id="version-1", kind=FAIRNESS
    )


def test_a_report_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(UnknownReportKind) as caught:
        _report("horoscope")

    assert caught.value.field == "kind"


def test_a_new_report_has_no_publication_yet() -> None:
    report = _report()

    assert (report.summary, report.attachments, report.publications) == ({}, {}, 0)


def test_publishing_records_the_summary_and_attachments() -> None:
    report = _report()

    report.publish({"top_features": ["age"]}, {"plot.png": DIGEST}, {"rows": 100}, actor=SYSTEM)

    assert (report.summary, report.attachments, report.publications) == (
        {"top_features": ["age"]},
        {"plot.png": DIGEST},
        1,
    )


def test_a_later_publication_replaces_the_earlier_one() -> None:
    report = _report()
    report.publish({"top_features": ["age"]}, {"plot.png": DIGEST}, {}, actor=SYSTEM)

    report.publish({"top_features": ["income"]}, {}, {}, actor=SYSTEM)

    assert (report.summary, report.attachments, report.publications) == ({"top_features": ["income"]}, {}, 2)


def test_an_attachment_without_a_sha256_digest_is_refused_naming_it() -> None:
    report = _report()

    with pytest.raises(InvalidPayload) as caught:
        report.publish({}, {"plot.png": "md5:abc"}, {}, actor=SYSTEM)

    assert caught.value.field == "attachments.plot.png"
    assert report.publications == 0
