"""Experiments, tracked runs and model labels: what MLflow clients record, as ledger events.

A tracked run is a client-reported run (``domain.run``, mode ``client``) filed
under an experiment; its parameters, metrics and artifacts are the same events
the native API records. Registered models are the ledger's models; their
descriptions, tags, aliases and stages are labels (``domain.model_labels``),
except the alias ``champion`` and the stage ``Production``, which are the
model's deployment and go through the same rules as the native deployment
endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from domain.deployment import Deployment
from domain.errors import InvalidPayload, NotFound, RuleViolated
from domain.experiment import DEFAULT_EXPERIMENT, Experiment
from domain.logged_model import LoggedModel, aggregate_id, public_id
from domain.model import Model
from domain.model_labels import CHAMPION_ALIAS, PRODUCTION_STAGE, ModelLabels
from domain.run import Run
from service.application.commands.governance import GovernanceCommands
from service.application.ledger_core import Written, retried_on_conflict

DEFAULT_EXPERIMENT_ID = "0"


class AlreadyExists(RuleViolated):
    """A record of that name exists already."""

    title = "Already exists"


class ChampionNotALabel(RuleViolated):
    """The champion is the deployment's: it changes by deploying another version, never by removing a label."""

    title = "Champion is a deployment"


class TrackingCommands(GovernanceCommands):
    """Commands behind the MLflow-compatible API."""

    # -- experiments ----------------------------------------------------------
    def experiment_uuid(self, experiment_id: str) -> uuid.UUID:
        """The aggregate id of an MLflow experiment id ("0" is the default experiment)."""
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            return Experiment.create_id(name=DEFAULT_EXPERIMENT)
        try:
            return uuid.UUID(experiment_id)
        except ValueError:
            raise NotFound(f"no experiment with id {experiment_id}", field="experiment_id") from None

    def experiment_public_id(self, experiment: Experiment) -> str:
        """The MLflow id of an experiment: "0" for the default one, else its aggregate id."""
        return DEFAULT_EXPERIMENT_ID if experiment.name == DEFAULT_EXPERIMENT else str(experiment.id)

    def experiment(self, experiment_id: str, actor: str | None = None) -> Experiment:
        """An experiment by MLflow id; the default experiment is created on first use when ``actor`` is given."""
        oid = self.experiment_uuid(experiment_id)
        try:
            found: Experiment = self.get(oid, Experiment)
        except NotFound:
            if experiment_id != DEFAULT_EXPERIMENT_ID:
                raise NotFound(f"no experiment with id {experiment_id}", field="experiment_id") from None
            if actor is None:
                raise
            self._create_experiment(DEFAULT_EXPERIMENT, {}, actor)
            found = self.get(oid, Experiment)
        return found

    def experiment_named(self, name: str) -> Experiment:
        """An experiment by name, or :class:`NotFound`."""
        found: Experiment = self.get(Experiment.create_id(name=name), Experiment)
        return found

    def _create_experiment(self, name: str, tags: dict[str, str], actor: str) -> Written:
        Experiment.check_creation(name, tags)
        try:
            self.get(Experiment.create_id(name=name), Experiment)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"an experiment named {name!r} exists already (deleted ones keep their name)")
        return self._written(Experiment(name=name, tags=tags, actor=actor))

    def create_experiment(self, name: str, tags: dict[str, str], actor: str) -> Written:
        """Create an experiment of a name not used before."""
        return self._create_experiment(name, tags, actor)

    @retried_on_conflict
    def set_experiment_tag(self, experiment_id: str, key: str, value: str, actor: str) -> Written:
        """Set a tag of an experiment."""
        experiment = self.experiment(experiment_id)
        experiment.set_tag(key, value, actor=actor)
        return self._written(experiment)

    @retried_on_conflict
    def delete_experiment(self, experiment_id: str, actor: str) -> Written:
        """Mark an experiment deleted (an event; nothing is erased)."""
        experiment = self.experiment(experiment_id)
        experiment.delete(actor=actor)
        return self._written(experiment)

    @retried_on_conflict
    def restore_experiment(self, experiment_id: str, actor: str) -> Written:
        """Restore a deleted experiment."""
        experiment = self.experiment(experiment_id)
        experiment.restore(actor=actor)
        return self._written(experiment)

    def aggregate_ids_created(self, topic: str) -> Iterator[uuid.UUID]:
        """The ids of the aggregates whose creation event has ``topic``, oldest first, from the event log itself."""
        start: int | None = None
        while True:
            page = self.recorder.select_notifications(start, 1000, topics=[topic])
            for notification in page:
                yield uuid.UUID(str(notification.originator_id))
            if len(page) < 1000:
                return
            start = page[-1].id + 1

    def experiments(self) -> list[Experiment]:
        """Every experiment, oldest first."""
        return [self.get(oid, Experiment) for oid in self.aggregate_ids_created(Experiment.Created.TOPIC)]

    # -- runs -----------------------------------------------------------------
    @retried_on_conflict
    def start_tracked_run(self, experiment_id: str, name: str, tags: dict[str, str], actor: str) -> Written:
        """Start a client-reported run filed under an experiment, with its first tags, in one transaction."""
        Run.check_request("client", 0, "auto", name, None)
        experiment = self.experiment(experiment_id, actor=actor)
        run = Run(
            name=name,
            mode="client",
            pipeline_id=None,
            pipeline_version=None,
            spec_digest=None,
            dataset_version_ids=[],
            code_version_id=None,
            params={},
            seed=0,
            device="auto",
            reproduces=None,
            actor=actor,
        )
        run.file_under(str(experiment.id), actor=actor)
        if tags:
            run.set_tags(tags, actor=actor)
        experiment.file_run(str(run.id), actor=actor)
        return self._written_all(run, experiment)

    @retried_on_conflict
    def record_batch(
        self,
        run_id: str,
        params: dict[str, Any],
        metrics: list[dict[str, Any]],
        tags: dict[str, str],
        actor: str,
    ) -> Written:
        """Record parameters, metric points and tags of a run in one transaction (all or nothing)."""
        run: Run = self.get(run_id, Run)
        run.check_not_deleted()
        if params:
            run.log_params(params, actor=actor)
        if metrics:
            run.log_metrics(metrics, actor=actor)
        if tags:
            run.set_tags(tags, actor=actor)
        return self._written(run) if run.pending_events else Written(str(run.id), self.position())

    @retried_on_conflict
    def end_tracked_run(self, run_id: str, status: str | None, name: str | None, actor: str) -> Written:
        """Rename (the ``mlflow.runName`` tag) and/or end a run (``status`` one of the ledger's end states)."""
        run: Run = self.get(run_id, Run)
        run.check_not_deleted()
        if name:
            run.set_tags({"mlflow.runName": name}, actor=actor)
        if status is not None and not run.finished:
            run.finish(status, None, actor=actor)
        return self._written(run) if run.pending_events else Written(str(run.id), self.position())

    @retried_on_conflict
    def delete_run(self, run_id: str, actor: str) -> Written:
        """Mark a run deleted (a tombstone event)."""
        run: Run = self.get(run_id, Run)
        run.delete(actor=actor)
        return self._written(run)

    @retried_on_conflict
    def restore_run(self, run_id: str, actor: str) -> Written:
        """Restore a deleted run."""
        run: Run = self.get(run_id, Run)
        run.restore(actor=actor)
        return self._written(run)

    def metric_history(self, run: Run, key: str) -> list[dict[str, Any]]:
        """Every point of metric ``key`` the run recorded, in recording order (read from its own events)."""
        points: list[dict[str, Any]] = []
        for stored in self.events.get(run.id):
            if isinstance(stored, Run.MetricsLogged):
                points.extend(p for p in stored.metrics if p["key"] == key)
        return points

    @retried_on_conflict
    def log_inputs(self, run_id: str, datasets: list[dict[str, Any]], model_ids: list[str], actor: str) -> Written:
        """Record the datasets (by digest) and logged models a run used."""
        run: Run = self.get(run_id, Run)
        for model_id in model_ids:
            self.logged_model(model_id)
        run.log_inputs(datasets, model_ids, actor=actor)
        return self._written(run) if run.pending_events else Written(str(run.id), self.position())

    @retried_on_conflict
    def log_outputs(self, run_id: str, models: list[dict[str, Any]], actor: str) -> Written:
        """Record the logged models a run produced."""
        run: Run = self.get(run_id, Run)
        for model in models:
            self.logged_model(model["model_id"])
        run.log_outputs(models, actor=actor)
        return self._written(run) if run.pending_events else Written(str(run.id), self.position())

    # -- logged models --------------------------------------------------------
    def logged_model(self, model_id: str) -> LoggedModel:
        """A logged model by MLflow model id (``m-<hex>``), or :class:`NotFound`."""
        oid = aggregate_id(model_id)
        if oid is None:
            raise NotFound(f"no logged model with id {model_id}", field="model_id")
        try:
            found: LoggedModel = self.get(oid, LoggedModel)
        except NotFound:
            raise NotFound(f"no logged model with id {model_id}", field="model_id") from None
        return found

    @retried_on_conflict
    def create_logged_model(
        self,
        experiment_id: str,
        name: str,
        source_run_id: str,
        model_type: str,
        params: dict[str, str],
        tags: dict[str, str],
        actor: str,
    ) -> Written:
        """Log a model from an open run of the experiment (its files become the run's artifacts)."""
        LoggedModel.check_creation(name, model_type, params, tags)
        try:
            run: Run = self.get(source_run_id, Run)
        except NotFound:
            raise NotFound(f"no run {source_run_id}", field="source_run_id") from None
        run.check_open()
        experiment = self.experiment(experiment_id, actor=actor)
        experiment.check_active()
        if run.experiment_id != str(experiment.id):
            raise InvalidPayload(f"run {source_run_id} is not filed under this experiment", field="source_run_id")
        model = LoggedModel(
            experiment_id=str(experiment.id),
            name=name,
            source_run_id=str(run.id),
            model_type=model_type,
            params=params,
            tags=tags,
            actor=actor,
        )
        experiment.file_model(str(model.id), actor=actor)
        return self._written_all(model, experiment)

    @retried_on_conflict
    def change_logged_model(
        self,
        model_id: str,
        actor: str,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str | None] | None = None,
        status: str | None = None,
        delete: bool = False,
    ) -> Written:
        """Record parameters, set or remove tags, finalize or delete a logged model."""
        model = self.logged_model(model_id)
        if params:
            model.log_params(params, actor=actor)
        if tags:
            model.set_tags(tags, actor=actor)
        if status is not None:
            model.finalize(status, actor=actor)
        if delete:
            model.delete(actor=actor)
        return self._written(model) if model.pending_events else Written(str(model.id), self.position())

    def logged_models(self, experiment_ids: list[str]) -> list[tuple[LoggedModel, str]]:
        """The logged models filed under the experiments (with each one's MLflow experiment id), oldest first
        within each experiment; only those experiments' models are read."""
        found: list[tuple[LoggedModel, str]] = []
        for experiment_id in dict.fromkeys(experiment_ids):
            try:
                experiment = self.experiment(experiment_id)
            except NotFound:
                if experiment_id == DEFAULT_EXPERIMENT_ID:
                    continue  # the default experiment before its first use: nothing filed under it
                raise
            found.extend((self.get(oid, LoggedModel), experiment_id) for oid in experiment.model_ids)
        return found

    @staticmethod
    def logged_model_public_id(model: LoggedModel) -> str:
        """The MLflow model id of a logged model."""
        return public_id(model.id)

    # -- registered models ----------------------------------------------------
    def labels(self, model_name: str) -> ModelLabels | None:
        """The labels of a model, or None while it has none."""
        try:
            found: ModelLabels = self.get(ModelLabels.create_id(model_name=model_name), ModelLabels)
        except NotFound:
            return None
        return found

    def _labels(self, model_name: str, actor: str) -> ModelLabels:
        return self.labels(model_name) or ModelLabels(model_name=model_name, actor=actor)

    def deployment_of(self, model_name: str) -> Deployment | None:
        """The model's deployment, or None before its first."""
        try:
            found: Deployment = self.get(Deployment.create_id(model_name=model_name), Deployment)
        except NotFound:
            return None
        return found

    def models(self) -> list[Model]:
        """Every model, oldest first."""
        return [self.get(oid, Model) for oid in self.aggregate_ids_created(Model.Created.TOPIC)]

    def create_registered_model(
        self, name: str, description: str, tags: dict[str, str], policy: dict[str, Any], actor: str
    ) -> Written:
        """Create a model with no versions yet (and its labels), under ``policy``."""
        try:
            self.model(name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"a registered model named {name!r} exists already")
        model = Model(name=name, policy=policy, actor=actor)
        labels = self._labels(name, actor)
        if description:
            labels.describe(None, description, actor=actor)
        for key, value in tags.items():
            labels.set_tag(None, key, value, actor=actor)
        return self._written_all(model, labels)

    @retried_on_conflict
    def label_model(
        self,
        name: str,
        actor: str,
        *,
        version: int | None = None,
        description: str | None = None,
        tag: tuple[str, str | None] | None = None,
        alias: tuple[str, int | None] | None = None,
        stage: str | None = None,
    ) -> Written:
        """Set a description, tag, alias or stage label of a model or of one of its versions."""
        self.model(name)
        if version is not None:
            self.model_version(name, version)
        labels = self._labels(name, actor)
        if description is not None:
            labels.describe(version, description, actor=actor)
        if tag is not None:
            labels.set_tag(version, tag[0], tag[1], actor=actor)
        if alias is not None:
            if alias[1] is not None:
                self.model_version(name, alias[1])
            labels.set_alias(alias[0], alias[1], actor=actor)
        if stage is not None and version is not None:
            labels.set_stage(version, stage, actor=actor)
        return self._written(labels)

    def set_alias(self, name: str, alias: str, version: int, actor: str) -> Written:
        """Point an alias at a version; ``champion`` deploys the version (only an approved one)."""
        if alias == CHAMPION_ALIAS:
            return self.deploy(
                model_name=name, action="champion", number=version, share=None, reason="alias champion", actor=actor
            )
        return self.label_model(name, actor, alias=(alias, version))

    def delete_alias(self, name: str, alias: str, actor: str) -> Written:
        """Remove an alias; the champion is changed by deploying another version, or stopped, never removed."""
        if alias == CHAMPION_ALIAS:
            raise ChampionNotALabel(
                "the champion is the model's deployment: deploy another approved version, or stop the deployment"
            )
        return self.label_model(name, actor, alias=(alias, None))

    def transition_stage(self, name: str, version: int, stage: str, actor: str) -> Written:
        """Label a version's stage; ``Production`` deploys it as champion (only an approved one)."""
        if stage == PRODUCTION_STAGE:
            return self.deploy(
                model_name=name, action="champion", number=version, share=None, reason="stage Production", actor=actor
            )
        return self.label_model(name, actor, version=version, stage=stage)
