"""The Dataset and DatasetVersion aggregates: version numbering, registration
rules and deprecation (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.dataset import Dataset, DatasetVersion
from domain.errors import DatasetVersionAlreadyDeprecated, InvalidPayload

ALICE = "user:alice"
DIGEST = "sha256:" + "ab" * 32


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "digest": DIGEST,
        "size": 1024,
        "format": "csv",
        "schema": [{"name": "age", "type": "int"}],
        "row_count": 10,
        "profile": [],
        "datasheet": {"motivation": "credit scoring", "pii_columns": ["name"]},
        "source": "upload",
        "actor": ALICE,
    }
    return fields | overrides


def test_a_dataset_name_is_one_aggregate() -> None:
    assert Dataset(name="loans", actor=ALICE).id == Dataset.create_id(name="loans")


def test_the_first_version_of_a_dataset_is_number_one() -> None:
    dataset = Dataset(name="loans", actor=ALICE)

    version = dataset.add_version(**_fields())

    assert (version.name, version.number) == ("loans", 1)
    assert dataset.versions == [str(version.id)]


def test_each_new_version_gets_the_next_number() -> None:
    dataset = Dataset(name="loans", actor=ALICE)
    dataset.add_version(**_fields())

    second = dataset.add_version(**_fields(digest="sha256:" + "cd" * 32))

    assert second.number == 2
    assert dataset.next_number() == 3


def test_a_version_id_is_made_of_the_dataset_name_and_number() -> None:
    dataset = Dataset(name="loans", actor=ALICE)

    version = dataset.add_version(**_fields())

    assert version.id == DatasetVersion.create_id(name="loans", number=1)


def test_adding_a_version_records_which_version_got_the_number() -> None:
    dataset = Dataset(name="loans", actor=ALICE)
    dataset.collect_events()

    version = dataset.add_version(**_fields())

    (added,) = dataset.collect_events()
    assert isinstance(added, Dataset.VersionAdded)
    assert (added.number, added.dataset_version_id) == (1, str(version.id))


def test_a_registered_version_keeps_its_description() -> None:
    version = Dataset(name="loans", actor=ALICE).add_version(**_fields())

    assert (version.digest, version.size, version.format, version.row_count, version.source) == (
        DIGEST,
        1024,
        "csv",
        10,
        "upload",
    )
    assert version.datasheet == {"motivation": "credit scoring", "pii_columns": ["name"]}
    assert not version.deprecated


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"digest": "sha256:abc"}, "digest", id="short-digest"),
        pytest.param({"size": -1}, "size", id="negative-size"),
        pytest.param({"row_count": -1}, "row_count", id="negative-rows"),
        pytest.param({"schema": [{"type": "int"}]}, "schema.0", id="column-without-name"),
        pytest.param({"datasheet": {"mood": "good"}}, "datasheet.mood", id="unknown-datasheet-field"),
        pytest.param({"datasheet": {"pii_columns": "name"}}, "datasheet.pii_columns", id="pii-not-a-list"),
    ],
)
def test_an_invalid_version_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    dataset = Dataset(name="loans", actor=ALICE)

    with pytest.raises(InvalidPayload) as caught:
        dataset.add_version(**_fields(**overrides))

    assert caught.value.field == field


def test_a_refused_version_takes_no_number() -> None:
    dataset = Dataset(name="loans", actor=ALICE)
    dataset.collect_events()

    with pytest.raises(InvalidPayload):
        dataset.add_version(**_fields(size=-1))

    assert (dataset.versions, dataset.collect_events()) == ([], [])


def test_a_dataset_version_can_be_deprecated() -> None:
    version = Dataset(name="loans", actor=ALICE).add_version(**_fields())

    version.deprecate("label leakage", actor=ALICE)

    assert version.deprecated


def test_a_dataset_version_is_deprecated_once() -> None:
    version = Dataset(name="loans", actor=ALICE).add_version(**_fields())
    version.deprecate("label leakage", actor=ALICE)

    with pytest.raises(DatasetVersionAlreadyDeprecated):
        version.deprecate("again", actor=ALICE)
