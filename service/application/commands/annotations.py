"""Tags and descriptions of runs, dataset versions and model versions.

Runs and dataset versions carry their own annotation events; a model version's
are the model's labels (``domain.model_labels``), the same events the
MLflow-compatible API records, so both APIs show one set of tags.
"""

from __future__ import annotations

from domain.annotations import check_description, check_tags
from domain.dataset import DatasetVersion
from domain.run import Run
from service.application.commands.tracking import TrackingCommands
from service.application.ledger_core import Written


class AnnotationCommands(TrackingCommands):
    """Commands that annotate what the ledger already holds."""

    def _unchanged(self, aggregate_id: object) -> Written:
        """The answer to an annotation that changed nothing: no event, the ledger's position now."""
        return Written(str(aggregate_id), self.position())

    def tag_run(self, run_id: str, tags: dict[str, str], actor: str) -> Written:
        """Set tags of a run (also after it ended)."""
        run: Run = self.get(run_id, Run)
        run.set_tags(check_tags(tags), actor=actor)
        return self._written(run) if run.pending_events else self._unchanged(run.id)

    def describe_run(self, run_id: str, description: str, actor: str) -> Written:
        """Set the description of a run."""
        run: Run = self.get(run_id, Run)
        run.describe(description, actor=actor)
        return self._written(run) if run.pending_events else self._unchanged(run.id)

    def tag_dataset_version(self, dataset_id: str, tags: dict[str, str], actor: str) -> Written:
        """Set tags of a dataset version."""
        found: DatasetVersion = self.get(dataset_id, DatasetVersion)
        found.set_tags(tags, actor=actor)
        return self._written(found) if found.pending_events else self._unchanged(found.id)

    def describe_dataset_version(self, dataset_id: str, description: str, actor: str) -> Written:
        """Set the description of a dataset version."""
        found: DatasetVersion = self.get(dataset_id, DatasetVersion)
        found.describe(description, actor=actor)
        return self._written(found) if found.pending_events else self._unchanged(found.id)

    def tag_model_version(self, name: str, version: int, tags: dict[str, str], actor: str) -> Written:
        """Set tags of a model version (labels of its model: one event per changed tag, in one transaction)."""
        self.model_version(name, version)
        labels = self._labels(name, actor)
        current = labels.tags.get(version, {})
        for key, value in check_tags(tags).items():
            if current.get(key) != value:
                labels.set_tag(version, key, value, actor=actor)
        return self._written(labels) if labels.pending_events else self._unchanged(labels.id)

    def describe_model_version(self, name: str, version: int, description: str, actor: str) -> Written:
        """Set the description of a model version."""
        self.model_version(name, version)
        labels = self._labels(name, actor)
        if labels.descriptions.get(version, "") == check_description(description) and not labels.pending_events:
            return self._unchanged(labels.id)
        labels.describe(version, description, actor=actor)
        return self._written(labels)
