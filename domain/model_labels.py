"""ModelLabels: the descriptive side of a registered model that MLflow clients
keep (descriptions, tags, aliases, stages), one aggregate per model name.

Labels describe; they never govern. The alias ``champion`` and the stage
``Production`` are not labels at all: they are the model's deployment
(``domain.deployment``), which only a version the approval policy approved
reaches, so this aggregate refuses to hold them.
"""

from __future__ import annotations

import re
import uuid

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.errors import InvalidPayload
from domain.experiment import check_tag
from domain.statistics.series import series_id

CHAMPION_ALIAS = "champion"
PRODUCTION_STAGE = "Production"
LABEL_STAGES = ("None", "Staging", "Archived")
DESCRIPTION_MAX = 20_000
ALIAS_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
VERSION_LIKE = re.compile(r"^[vV]\d+$")


class ModelLabels(LedgerAggregate):
    """Descriptions, tags, aliases and stages of a model and its versions (``version`` None: the model)."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The model got its first label."""

        TOPIC = "mlledger.modellabels.Created.v1"
        model_name: str

    class DescriptionSet(LedgerAggregate.Event):
        """The description of the model (``version`` None) or of one version."""

        TOPIC = "mlledger.modellabels.DescriptionSet.v1"
        version: int | None
        description: str

    class TagSet(LedgerAggregate.Event):
        """A tag of the model or of a version was set (``value`` None: removed)."""

        TOPIC = "mlledger.modellabels.TagSet.v1"
        version: int | None
        key: str
        value: str | None

    class AliasSet(LedgerAggregate.Event):
        """An alias now names ``version`` (None: the alias was removed)."""

        TOPIC = "mlledger.modellabels.AliasSet.v1"
        alias: str
        version: int | None

    class StageSet(LedgerAggregate.Event):
        """A version's stage label (None, Staging or Archived)."""

        TOPIC = "mlledger.modellabels.StageSet.v1"
        version: int
        stage: str

    @staticmethod
    def create_id(model_name: str, **_: object) -> uuid.UUID:
        """One aggregate per model name."""
        return series_id("model-labels", model_name)

    @event(Created)
    def __init__(self, model_name: str, actor: str) -> None:
        self.model_name = model_name
        self.descriptions: dict[int | None, str] = {}
        self.tags: dict[int | None, dict[str, str]] = {}
        self.aliases: dict[str, int] = {}
        self.stages: dict[int, str] = {}

    def describe(self, version: int | None, description: str, actor: str) -> None:
        """Set the description of the model or of a version."""
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
            raise InvalidPayload(f"description must be at most {DESCRIPTION_MAX} characters", field="description")
        self._describe(version=version, description=description, actor=actor)

    @event(DescriptionSet)
    def _describe(self, version: int | None, description: str, actor: str) -> None:
        self.descriptions[version] = description

    def set_tag(self, version: int | None, key: str, value: str | None, actor: str) -> None:
        """Set (or, with ``value`` None, remove) a tag of the model or of a version."""
        if value is None:
            if key not in self.tags.get(version, {}):
                raise InvalidPayload(f"no tag {key!r} to delete", field="key")
        else:
            check_tag(key, value, "tag")
        self._set_tag(version=version, key=key, value=value, actor=actor)

    @event(TagSet)
    def _set_tag(self, version: int | None, key: str, value: str | None, actor: str) -> None:
        tags = self.tags.setdefault(version, {})
        if value is None:
            tags.pop(key, None)
        else:
            tags[key] = value

    @staticmethod
    def check_alias(alias: str) -> None:
        """An alias is an identifier; ``champion`` is the deployment's, never a label."""
        if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or VERSION_LIKE.match(alias):
            raise InvalidPayload(
                "an alias is a letter or '_' followed by up to 254 letters, digits, '_' or '-', "
                "and not of the form v<number>",
                field="alias",
            )
        if alias == CHAMPION_ALIAS:
            raise InvalidPayload("the champion alias is the model's deployment, not a label", field="alias")

    def set_alias(self, alias: str, version: int | None, actor: str) -> None:
        """Point an alias at a version (or remove it with None)."""
        self.check_alias(alias)
        if version is None and alias not in self.aliases:
            raise InvalidPayload(f"no alias {alias!r} to delete", field="alias")
        self._set_alias(alias=alias, version=version, actor=actor)

    @event(AliasSet)
    def _set_alias(self, alias: str, version: int | None, actor: str) -> None:
        if version is None:
            self.aliases.pop(alias, None)
        else:
            self.aliases[alias] = version

    def set_stage(self, version: int, stage: str, actor: str) -> None:
        """Label a version's stage; ``Production`` is the deployment's champion, never a label."""
        if stage not in LABEL_STAGES:
            raise InvalidPayload(f"stage must be one of {', '.join(LABEL_STAGES)} or {PRODUCTION_STAGE}", field="stage")
        self._set_stage(version=version, stage=stage, actor=actor)

    @event(StageSet)
    def _set_stage(self, version: int, stage: str, actor: str) -> None:
        self.stages[version] = stage
