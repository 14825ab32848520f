"""DatasetVersion: one immutable version of a named dataset, by content digest."""

from __future__ import annotations

import re
import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.annotations import check_description, check_tags
from domain.errors import DatasetVersionAlreadyDeprecated, InvalidPayload
from domain.statistics.series import check_name, series_id

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
DATASHEET_FIELDS = (
    "motivation",
    "composition",
    "collection",
    "preprocessing",
    "uses",
    "pii_columns",
    "protected_attributes",
)


def check_digest(digest: str, field: str = "digest") -> None:
    """Refuse anything but ``sha256:<64 lowercase hex>``."""
    if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
        raise InvalidPayload(
            f"{field} must look like sha256:<64 lowercase hex digits>, got {digest!r}",
            field=field,
        )


def check_datasheet(datasheet: dict[str, Any]) -> None:
    """Datasheet fields are the known ones; column lists are lists of strings."""
    for key in datasheet:
        if key not in DATASHEET_FIELDS:
            raise InvalidPayload(
                f"unknown datasheet field {key!r}; known fields are {', '.join(DATASHEET_FIELDS)}",
                field=f"datasheet.{key}",
            )
    for key in ("pii_columns", "protected_attributes"):
        value = datasheet.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidPayload(f"datasheet.{key} must be a list of column names", field=f"datasheet.{key}")


class Dataset(LedgerAggregate):
    """A named dataset: numbers its versions."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The dataset name was first used."""

        TOPIC = "mlledger.dataset.Created.v1"
        name: str

    class VersionAdded(LedgerAggregate.Event):
        """Version ``number`` of the dataset is the dataset version ``dataset_version_id``."""

        TOPIC = "mlledger.dataset.VersionAdded.v1"
        number: int
        dataset_version_id: str

    @staticmethod
    def create_id(name: str, **_: object) -> uuid.UUID:
        """One aggregate per dataset name."""
        return series_id("dataset", name)

    @event(Created)
    def __init__(self, name: str, actor: str) -> None:
        self.name = name
        self.versions: list[str] = []

    def next_number(self) -> int:
        """The number the next version gets (numbers run 1, 2, 3, ...)."""
        return len(self.versions) + 1

    def add_version(
        self,
        *,
        digest: str,
        size: int,
        format: str,
        schema: list[dict[str, Any]],
        row_count: int,
        profile: list[dict[str, Any]],
        datasheet: dict[str, Any],
        source: str,
        actor: str,
    ) -> DatasetVersion:
        """Register the next version of this dataset: it gets the next number.

        Save the dataset before the version it returns, so the series is
        recorded first (its version number is what the version's id is made of).
        """
        DatasetVersion.check_registration(self.name, digest, size, row_count, schema, datasheet)
        version = DatasetVersion(
            name=self.name,
            number=self.next_number(),
            digest=digest,
            size=size,
            format=format,
            schema=schema,
            row_count=row_count,
            profile=profile,
            datasheet=datasheet,
            source=source,
            actor=actor,
        )
        self._add_version(number=version.number, dataset_version_id=str(version.id), actor=actor)
        return version

    @event(VersionAdded)
    def _add_version(self, number: int, dataset_version_id: str, actor: str) -> None:
        self.versions.append(dataset_version_id)


class DatasetVersion(LedgerAggregate):
    """A version of a dataset: its digest, size, format, schema and datasheet."""

    class Registered(Aggregate.Created, LedgerAggregate.Event):
        """A dataset version was registered."""

        TOPIC = "mlledger.datasetversion.Registered.v1"
        name: str
        number: int
        digest: str
        size: int
        format: str
        schema: list[dict[str, Any]]
        row_count: int
        profile: list[dict[str, Any]]
        datasheet: dict[str, Any]
        source: str

    class Deprecated(LedgerAggregate.Event):
        """The version should no longer be used for training."""

        TOPIC = "mlledger.datasetversion.Deprecated.v1"
        reason: str

    class TagsSet(LedgerAggregate.Event):
        """Tags were set (a later value replaces an earlier one)."""

        TOPIC = "mlledger.datasetversion.TagsSet.v1"
        tags: dict[str, str]

    class DescriptionSet(LedgerAggregate.Event):
        """The description was set (empty: cleared)."""

        TOPIC = "mlledger.datasetversion.DescriptionSet.v1"
        description: str

    @staticmethod
    def create_id(name: str, number: int, **_: object) -> uuid.UUID:
        """One aggregate per (name, number): a duplicate version number is refused when written."""
        return series_id("dataset-version", f"{name}\n{number}")

    @event(Registered)
    def __init__(
        self,
        name: str,
        number: int,
        digest: str,
        size: int,
        format: str,
        schema: list[dict[str, Any]],
        row_count: int,
        profile: list[dict[str, Any]],
        datasheet: dict[str, Any],
        source: str,
        actor: str,
    ) -> None:
        self.name = name
        self.number = number
        self.digest = digest
        self.size = size
        self.format = format
        self.schema = schema
        self.row_count = row_count
        self.profile = profile
        self.datasheet = datasheet
        self.source = source
        self.deprecated = False
        self.tags: dict[str, str] = {}
        self.description = ""

    @staticmethod
    def check_registration(
        name: str,
        digest: str,
        size: int,
        row_count: int,
        schema: list[dict[str, Any]],
        datasheet: dict[str, Any],
    ) -> None:
        """Validate the fields of a registration before anything is recorded."""
        check_name(name)
        check_digest(digest)
        if size < 0:
            raise InvalidPayload("size must be zero or more bytes", field="size")
        if row_count < 0:
            raise InvalidPayload("row_count must be zero or more", field="row_count")
        for index, column in enumerate(schema):
            if not isinstance(column, dict) or not isinstance(column.get("name"), str):
                raise InvalidPayload("each schema column needs a string 'name'", field=f"schema.{index}")
        check_datasheet(datasheet)

    def deprecate(self, reason: str, actor: str) -> None:
        """Mark the version deprecated; refuse twice."""
        if self.deprecated:
            raise DatasetVersionAlreadyDeprecated("this dataset version is already deprecated")
        self._deprecate(reason=reason, actor=actor)

    @event(Deprecated)
    def _deprecate(self, reason: str, actor: str) -> None:
        self.deprecated = True

    def set_tags(self, tags: dict[str, str], actor: str) -> None:
        """Set tags (also on a deprecated version: tags annotate, they do not change the data)."""
        changed = {k: v for k, v in check_tags(tags).items() if self.tags.get(k) != v}
        if changed:
            self._set_tags(tags=changed, actor=actor)

    @event(TagsSet)
    def _set_tags(self, tags: dict[str, str], actor: str) -> None:
        self.tags.update(tags)

    def describe(self, description: str, actor: str) -> None:
        """Set the description (nothing is recorded when it is unchanged)."""
        if check_description(description) != self.description:
            self._describe(description=description, actor=actor)

    @event(DescriptionSet)
    def _describe(self, description: str, actor: str) -> None:
        self.description = description
