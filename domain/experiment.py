"""Experiment: a named group of client-reported runs, as MLflow clients organise
them. Deleting one is an event: nothing is erased, the experiment and its runs
stay on the ledger, marked deleted."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload, RuleViolated
from domain.statistics.series import series_id

DEFAULT_EXPERIMENT = "Default"
NAME_MAX = 500
TAG_KEY_MAX = 250
TAG_VALUE_MAX = 8000


class ExperimentDeleted(RuleViolated):
    """The experiment is deleted: it takes no new runs or tags until it is restored."""

    title = "Experiment deleted"


class ExperimentNotDeleted(RuleViolated):
    """Only a deleted experiment can be restored."""

    title = "Experiment not deleted"


def check_tag(key: object, value: object, field: str = "tags") -> tuple[str, str]:
    """A tag is a key of 1 to 250 characters and a string value of at most 8,000."""
    if not isinstance(key, str) or not key or len(key) > TAG_KEY_MAX:
        raise InvalidPayload(f"{field} key must be 1 to {TAG_KEY_MAX} characters", field=field)
    if not isinstance(value, str) or len(value) > TAG_VALUE_MAX:
        raise InvalidPayload(f"{field}.{key} must be a string of at most {TAG_VALUE_MAX} characters", field=field)
    return key, value


class Experiment(LedgerAggregate):
    """A named experiment and the runs filed under it."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The experiment was created."""

        TOPIC = "mlledger.experiment.Created.v1"
        name: str
        tags: dict[str, str]

    class TagSet(LedgerAggregate.Event):
        """A tag was set (a later value replaces an earlier one)."""

        TOPIC = "mlledger.experiment.TagSet.v1"
        key: str
        value: str

    class RunFiled(LedgerAggregate.Event):
        """A run was filed under the experiment."""

        TOPIC = "mlledger.experiment.RunFiled.v1"
        run_id: str

    class ModelFiled(LedgerAggregate.Event):
        """A logged model (``domain.logged_model``) was filed under the experiment."""

        TOPIC = "mlledger.experiment.ModelFiled.v1"
        model_id: str

    class Deleted(LedgerAggregate.Event):
        """The experiment was marked deleted (it and its runs stay on the ledger)."""

        TOPIC = "mlledger.experiment.Deleted.v1"

    class Restored(LedgerAggregate.Event):
        """A deleted experiment was restored."""

        TOPIC = "mlledger.experiment.Restored.v1"

    @staticmethod
    def create_id(name: str, **_: object) -> uuid.UUID:
        """One aggregate per experiment name (a deleted experiment's name stays taken)."""
        return series_id("experiment", name)

    @staticmethod
    def check_creation(name: str, tags: dict[str, Any]) -> None:
        """Validate the name and the tags."""
        if not isinstance(name, str) or not name or name != name.strip() or len(name) > NAME_MAX:
            raise InvalidPayload(f"name must be 1 to {NAME_MAX} characters with no surrounding spaces", field="name")
        if not name.isprintable():
            raise InvalidPayload("name may not contain control characters", field="name")
        for key, value in tags.items():
            check_tag(key, value)

    @event(Created)
    def __init__(self, name: str, tags: dict[str, str], actor: str) -> None:
        self.name = name
        self.tags = dict(tags)
        self.run_ids: list[str] = []
        self.model_ids: list[str] = []
        self.deleted = False

    def check_active(self) -> None:
        """A deleted experiment takes nothing new."""
        if self.deleted:
            raise ExperimentDeleted(f"experiment {self.name!r} is deleted")

    def set_tag(self, key: str, value: str, actor: str) -> None:
        """Set a tag on an active experiment."""
        self.check_active()
        check_tag(key, value, "tag")
        self._set_tag(key=key, value=value, actor=actor)

    @event(TagSet)
    def _set_tag(self, key: str, value: str, actor: str) -> None:
        self.tags[key] = value

    def file_run(self, run_id: str, actor: str) -> None:
        """File a new run under this (active) experiment."""
        self.check_active()
        self._file_run(run_id=run_id, actor=actor)

    @event(RunFiled)
    def _file_run(self, run_id: str, actor: str) -> None:
        self.run_ids.append(run_id)

    def file_model(self, model_id: str, actor: str) -> None:
        """File a new logged model under this (active) experiment."""
        self.check_active()
        self._file_model(model_id=model_id, actor=actor)

    @event(ModelFiled)
    def _file_model(self, model_id: str, actor: str) -> None:
        self.model_ids.append(model_id)

    def delete(self, actor: str) -> None:
        """Mark the experiment deleted."""
        self.check_active()
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: str) -> None:
        self.deleted = True

    def restore(self, actor: str) -> None:
        """Undo a deletion."""
        if not self.deleted:
            raise ExperimentNotDeleted(f"experiment {self.name!r} is not deleted")
        self._restore(actor=actor)

    @event(Restored)
    def _restore(self, actor: str) -> None:
        self.deleted = False
