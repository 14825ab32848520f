"""The Export aggregate: what a bundle commits to, packing, downloads and who
sees it (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import ExportAlreadyPacked, ExportNotPacked, InvalidPayload
from domain.export import Export, check_scope, events_commitment

AUDITOR = "user:audrey"
DIGEST = "sha256:" + "ab" * 32
SCOPE: dict[str, Any] = {"from": None, "to": None, "predictions": "sample", "sample_size": 100}


def _export(**overrides: Any) -> Export:
    fields: dict[str, Any] = {
        "model_name": "credit",
        "scope": dict(SCOPE),
        "shared_with": ["regulator-2", "regulator-1", "regulator-2"],
        "event_count": 12,
        "events_digest": DIGEST,
        "files": {"reports/b.json": DIGEST, "reports/a.json": DIGEST},
        "actor": AUDITOR,
    }
    return Export.create(**(fields | overrides))


def _packed() -> Export:
    export = _export()
    export.pack(DIGEST, 4096, actor=AUDITOR)
    return export


def test_an_export_records_its_recipients_once_each_in_order() -> None:
    export = _export()

    assert export.shared_with == ["regulator-1", "regulator-2"]
    assert (export.event_count, list(export.files), export.created_by) == (
        12,
        ["reports/a.json", "reports/b.json"],
        AUDITOR,
    )


def test_an_export_holds_at_least_one_event() -> None:
    with pytest.raises(InvalidPayload) as caught:
        _export(event_count=0)

    assert caught.value.field == "events.count"


def test_an_export_file_without_a_sha256_digest_is_refused_naming_it() -> None:
    with pytest.raises(InvalidPayload) as caught:
        _export(files={"manifest.json": "sha256:abc"})

    assert caught.value.field == "files.manifest.json"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"predictions": "some"}, "predictions", id="unknown-prediction-mode"),
        pytest.param({"sample_size": 0}, "sample_size", id="empty-sample"),
        pytest.param({"from": "yesterday"}, "from", id="not-a-timestamp"),
        pytest.param(
            {"from": "2026-11-23T00:00:00.000000Z", "to": "2026-11-22T00:00:00.000000Z"}, "from", id="from-after-to"
        ),
        pytest.param({"extra": 1}, "scope", id="unknown-field"),
    ],
)
def test_an_invalid_scope_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        check_scope(SCOPE | overrides)

    assert caught.value.field == field


def test_packing_records_the_archive_digest_and_size() -> None:
    export = _export()

    export.pack(DIGEST, 4096, actor=AUDITOR)

    assert (export.bundle_digest, export.size) == (DIGEST, 4096)


def test_an_export_archive_is_recorded_once() -> None:
    export = _packed()

    with pytest.raises(ExportAlreadyPacked) as caught:
        export.pack("sha256:" + "cd" * 32, 10, actor=AUDITOR)

    assert caught.value.field == "bundle_digest"
    assert export.bundle_digest == DIGEST


def test_an_archive_of_no_bytes_is_refused() -> None:
    export = _export()

    with pytest.raises(InvalidPayload) as caught:
        export.pack(DIGEST, 0, actor=AUDITOR)

    assert caught.value.field == "size"


def test_an_export_cannot_be_downloaded_before_it_is_packed() -> None:
    export = _export()

    with pytest.raises(ExportNotPacked) as caught:
        export.record_download("regulator-1", actor="user:regulator-1")

    assert caught.value.field == "export_id"


def test_each_download_is_counted() -> None:
    export = _packed()

    export.record_download("regulator-1", actor="user:regulator-1")
    export.record_download("regulator-1", actor="user:regulator-1")

    assert export.downloads == 2


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_admins_and_auditors_see_every_export(role: str) -> None:
    assert _export().visible_to("someone-else", [role])


def test_a_regulator_sees_an_export_shared_with_them() -> None:
    assert _export().visible_to("regulator-1", ["regulator"])


def test_a_regulator_does_not_see_an_export_shared_with_others() -> None:
    assert not _export().visible_to("regulator-9", ["regulator"])


def test_sharing_alone_does_not_show_an_export_to_a_principal_who_is_not_a_regulator() -> None:
    assert not _export().visible_to("regulator-1", ["data_scientist"])


def test_the_events_commitment_depends_on_the_order_of_the_events() -> None:
    first, second = (1, "ab" * 32), (2, "cd" * 32)

    assert events_commitment([first, second]) != events_commitment([second, first])
