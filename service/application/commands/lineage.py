"""Datasets, code versions, pipelines and runs: what a model is made from."""

from __future__ import annotations

from typing import Any

from domain.code import CodeVersion
from domain.dataset import Dataset, DatasetVersion
from domain.errors import InvalidPayload, NotFound
from domain.pipeline import Pipeline
from domain.run import Run
from service.application.ledger_core import LedgerCore, Written, retried_on_conflict


class LineageCommands(LedgerCore):
    """Commands that record lineage."""

    def register_dataset_version(
        self,
        *,
        name: str,
        digest: str,
        size: int,
        format: str,
        schema: list[dict[str, Any]],
        row_count: int,
        datasheet: dict[str, Any],
        source: str,
        actor: str,
        profile: list[dict[str, Any]] | None = None,
    ) -> Written:
        """Register the next version of a named dataset, by content digest."""
        series: Dataset = self._series(Dataset, name, actor)
        dataset = series.add_version(
            digest=digest,
            size=size,
            format=format,
            schema=schema,
            row_count=row_count,
            profile=profile or [],
            datasheet=datasheet,
            source=source,
            actor=actor,
        )
        recordings = self.save(series, dataset)  # the named dataset before its version
        return Written(id=str(dataset.id), position=recordings[-1].notification.id)

    def deprecate_dataset_version(self, dataset_id: str, reason: str, actor: str) -> Written:
        """Mark a dataset version deprecated."""
        dataset: DatasetVersion = self.get(dataset_id, DatasetVersion)
        dataset.deprecate(reason, actor=actor)
        return self._written(dataset)

    def register_code_version(
        self, *, repository: str, commit: str, archive_digest: str | None, entrypoint: str | None, actor: str
    ) -> Written:
        """Register a code version."""
        CodeVersion.check_registration(repository, commit, archive_digest, entrypoint)
        code = CodeVersion(
            repository=repository, commit=commit, archive_digest=archive_digest, entrypoint=entrypoint, actor=actor
        )
        return self._written(code)

    def add_pipeline_spec(self, *, name: str, kind: str, spec: dict[str, Any], actor: str) -> tuple[int, Written]:
        """Create the pipeline on first use and record a new spec version; return its number."""
        Pipeline.check_creation(name, kind)
        try:
            pipeline: Pipeline = self.get(Pipeline.create_id(name=name), Pipeline)
        except NotFound:
            pipeline = Pipeline(name=name, kind=kind, actor=actor)
        pipeline.check_kind(kind)
        number = pipeline.add_spec(spec, actor=actor)
        return number, self._written(pipeline)

    def start_run(
        self,
        *,
        name: str,
        mode: str,
        pipeline: str | None,
        pipeline_version: int | None,
        dataset_version_ids: list[str],
        code_version_id: str | None,
        params: dict[str, Any],
        seed: int,
        device: str,
        actor: str,
        reproduces: str | None = None,
    ) -> Written:
        """Request a run for a runner (mode ``runner``) or start a client-reported run."""
        Run.check_request(mode, seed, device, name, pipeline)
        pipeline_id: str | None = None
        spec_digest: str | None = None
        if pipeline is not None:
            found: Pipeline = self.get(Pipeline.create_id(name=pipeline), Pipeline)
            pipeline_version = found.spec_number(pipeline_version)
            params = found.run_params(pipeline_version, params)
            pipeline_id, spec_digest = str(found.id), found.digests[pipeline_version - 1]
        else:
            pipeline_version = None
        for index, dataset_id in enumerate(dataset_version_ids):
            try:
                self.get(dataset_id, DatasetVersion)
            except NotFound:
                raise InvalidPayload(f"no dataset version {dataset_id}", field=f"dataset_version_ids.{index}") from None
        if code_version_id is not None:
            try:
                self.get(code_version_id, CodeVersion)
            except NotFound:
                raise InvalidPayload(f"no code version {code_version_id}", field="code_version_id") from None
        run = Run(
            name=name,
            mode=mode,
            pipeline_id=pipeline_id,
            pipeline_version=pipeline_version,
            spec_digest=spec_digest,
            dataset_version_ids=dataset_version_ids,
            code_version_id=code_version_id,
            params=params,
            seed=seed,
            device=device,
            reproduces=reproduces,
            actor=actor,
        )
        return self._written(run)

    @retried_on_conflict
    def log_params(self, run_id: str, params: dict[str, Any], actor: str) -> Written:
        """Record run parameters."""
        run: Run = self.get(run_id, Run)
        run.log_params(params, actor=actor)
        return self._written(run) if run.pending_events else Written(str(run.id), self.position())

    @retried_on_conflict
    def log_metrics(self, run_id: str, metrics: list[dict[str, Any]], actor: str) -> Written:
        """Record a batch of metric points."""
        run: Run = self.get(run_id, Run)
        run.log_metrics(metrics, actor=actor)
        return self._written(run)

    @retried_on_conflict
    def record_artifact(self, run_id: str, name: str, digest: str, size: int, media_type: str, actor: str) -> Written:
        """Record an artifact already in the blob store."""
        run: Run = self.get(run_id, Run)
        run.record_artifact(name, digest, size, media_type, actor=actor)
        return self._written(run)

    def finish_run(self, run_id: str, status: str, error: str | None, actor: str) -> Written:
        """End a run."""
        run: Run = self.get(run_id, Run)
        run.finish(status, error, actor=actor)
        return self._written(run)
