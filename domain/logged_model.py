"""LoggedModel: a model a client logged from a run (MLflow 3's logged models,
``mlflow.<flavor>.log_model`` and autolog). Its files are artifacts of its source
run (so the run digest that approvals sign commits to them); this record holds
what MLflow keeps about the model itself: name, type, parameters, tags and
whether its upload finished. Deleting one is an event; nothing is erased."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload, RuleViolated
from domain.experiment import check_tag

NAME_MAX = 200
MODEL_TYPE_MAX = 200
PARAMS_MAX = 1000
STATUSES = ("PENDING", "READY", "UPLOAD_FAILED")
PUBLIC_PREFIX = "m-"


class LoggedModelDeleted(RuleViolated):
    """The logged model is deleted: it takes no new files, tags or status."""

    title = "Logged model deleted"


class LoggedModelFinalized(RuleViolated):
    """A logged model's status is set once, when its upload ends."""

    title = "Logged model finalized"


def public_id(aggregate_id: uuid.UUID) -> str:
    """The MLflow model id of a logged model (``m-`` and 32 hex digits)."""
    return f"{PUBLIC_PREFIX}{aggregate_id.hex}"


def aggregate_id(model_id: str) -> uuid.UUID | None:
    """The aggregate id of an MLflow model id, or None when it is not one of ours."""
    if not model_id.startswith(PUBLIC_PREFIX):
        return None
    try:
        return uuid.UUID(hex=model_id.removeprefix(PUBLIC_PREFIX))
    except ValueError:
        return None


def check_name(name: str, field: str = "name") -> str:
    """A model name is 1 to 200 printable characters without ``/``."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or "/" in name or not name.isprintable():
        raise InvalidPayload(f"{field} must be 1 to {NAME_MAX} printable characters without '/'", field=field)
    return name


class LoggedModel(LedgerAggregate):
    """A model logged from a run, its parameters, tags and status."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The model was logged from ``source_run_id`` (pending until its files are uploaded)."""

        TOPIC = "mlledger.loggedmodel.Created.v1"
        experiment_id: str
        name: str
        source_run_id: str
        model_type: str
        params: dict[str, str]
        tags: dict[str, str]

    class ParamsLogged(LedgerAggregate.Event):
        """Parameters were recorded (a key keeps its first value)."""

        TOPIC = "mlledger.loggedmodel.ParamsLogged.v1"
        params: dict[str, str]

    class TagsSet(LedgerAggregate.Event):
        """Tags were set (a later value replaces an earlier one; None removes the tag)."""

        TOPIC = "mlledger.loggedmodel.TagsSet.v1"
        tags: dict[str, str | None]

    class Finalized(LedgerAggregate.Event):
        """The upload ended: READY or UPLOAD_FAILED."""

        TOPIC = "mlledger.loggedmodel.Finalized.v1"
        status: str

    class Deleted(LedgerAggregate.Event):
        """The model was marked deleted (its record and files stay on the ledger)."""

        TOPIC = "mlledger.loggedmodel.Deleted.v1"

    @staticmethod
    def check_creation(name: str, model_type: str, params: dict[str, Any], tags: dict[str, Any]) -> None:
        """Validate the name, type, parameters and tags of a new logged model."""
        check_name(name)
        if not isinstance(model_type, str) or len(model_type) > MODEL_TYPE_MAX:
            raise InvalidPayload(f"model_type must be at most {MODEL_TYPE_MAX} characters", field="model_type")
        if len(params) > PARAMS_MAX:
            raise InvalidPayload(f"a logged model has at most {PARAMS_MAX} parameters", field="params")
        for key, value in params.items():
            check_tag(key, value, "params")
        for key, value in tags.items():
            check_tag(key, value)

    @event(Created)
    def __init__(
        self,
        experiment_id: str,
        name: str,
        source_run_id: str,
        model_type: str,
        params: dict[str, str],
        tags: dict[str, str],
        actor: str,
    ) -> None:
        self.experiment_id = experiment_id
        self.name = name
        self.source_run_id = source_run_id
        self.model_type = model_type
        self.params = dict(params)
        self.tags = dict(tags)
        self.creator = actor
        self.status = "PENDING"
        self.deleted = False

    def check_active(self) -> None:
        """A deleted model takes nothing new."""
        if self.deleted:
            raise LoggedModelDeleted(f"logged model {public_id(self.id)} is deleted")

    def log_params(self, params: dict[str, str], actor: str) -> None:
        """Record parameters; a key keeps its first value."""
        self.check_active()
        for key, value in params.items():
            check_tag(key, value, "params")
        new = {k: v for k, v in params.items() if k not in self.params}
        if len(self.params) + len(new) > PARAMS_MAX:
            raise InvalidPayload(f"a logged model has at most {PARAMS_MAX} parameters", field="params")
        if new:
            self._log_params(params=new, actor=actor)

    @event(ParamsLogged)
    def _log_params(self, params: dict[str, str], actor: str) -> None:
        self.params.update(params)

    def set_tags(self, tags: dict[str, str | None], actor: str) -> None:
        """Set (or, with None, remove) tags."""
        self.check_active()
        for key, value in tags.items():
            check_tag(key, "" if value is None else value)
        changed = {k: v for k, v in tags.items() if self.tags.get(k) != v}
        if changed:
            self._set_tags(tags=changed, actor=actor)

    @event(TagsSet)
    def _set_tags(self, tags: dict[str, str | None], actor: str) -> None:
        for key, value in tags.items():
            if value is None:
                self.tags.pop(key, None)
            else:
                self.tags[key] = value

    def finalize(self, status: str, actor: str) -> None:
        """End the upload, once: READY or UPLOAD_FAILED (READY again on a READY model changes nothing)."""
        self.check_active()
        if status not in STATUSES[1:]:
            raise InvalidPayload("status must be READY or UPLOAD_FAILED", field="status")
        if self.status == status:
            return
        if self.status != "PENDING":
            raise LoggedModelFinalized(f"logged model {public_id(self.id)} is already {self.status}")
        self._finalize(status=status, actor=actor)

    @event(Finalized)
    def _finalize(self, status: str, actor: str) -> None:
        self.status = status

    def delete(self, actor: str) -> None:
        """Mark the model deleted."""
        self.check_active()
        self._delete(actor=actor)

    @event(Deleted)
    def _delete(self, actor: str) -> None:
        self.deleted = True
