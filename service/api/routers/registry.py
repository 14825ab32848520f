"""Lists from the registry read model (cursor-paged, see ``service.api.paging``), run search and
comparison, and the tags and descriptions of model versions."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from domain.errors import InvalidPayload, NotFound
from projections import registry_queries as q
from service.api.deps import AdminCaller, ConnDep, LedgerDep, LineageReader, LineageWriter, written
from service.api.mlflow_search import Searchable, matches, parse_filter
from service.api.paging import PageDep
from service.api.schemas import WriteResult

router = APIRouter(prefix="/v1", tags=["registry"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]
SEARCH_SCAN = 500
COMPARE_MAX = 10


class TagsBody(BaseModel):
    """Tags to set (a later value replaces an earlier one)."""

    tags: dict[str, str] = Field(min_length=1, max_length=100)


class DescriptionBody(BaseModel):
    """A description (empty clears it)."""

    description: str = Field(max_length=20_000)


@router.get("/principals", response_model=list[q.PrincipalPublic])
def list_principals(
    caller: AdminCaller, conn: ConnDep, page: PageDep, request: Request, response: Response
) -> list[q.PrincipalPublic]:
    """Principals by name (admin)."""
    found = q.list_principals(conn, limit=page.limit + 1, after=page.after("principals"))
    return page.page(request, response, "principals", found, lambda p: (p.name, p.id))


@router.get("/datasets/{name}/versions", response_model=list[q.DatasetVersionPublic])
def dataset_versions(
    name: NamePath, caller: LineageReader, conn: ConnDep, page: PageDep, request: Request, response: Response
) -> list[q.DatasetVersionPublic]:
    """The versions of a dataset, oldest first."""
    found = q.dataset_versions(conn, name, limit=page.limit + 1, after=page.after(f"datasets/{name}"))
    return page.page(request, response, f"datasets/{name}", found, lambda d: (d.number,))


@router.get("/pipelines/{name}/specs/{version}", response_model=q.PipelineSpecPublic)
def pipeline_spec(name: NamePath, version: VersionPath, caller: LineageReader, conn: ConnDep) -> q.PipelineSpecPublic:
    """One spec version of a pipeline."""
    found = q.pipeline(conn, name, version)
    if found is None:
        raise NotFound(f"pipeline {name} has no spec version {version}", field="version")
    return found


def _searchable(run: q.RunPublic, metrics: dict[str, float]) -> Searchable:
    params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in run.params.items()}
    attributes: dict[str, str | int | float | None] = {
        "status": run.status,
        "name": run.name,
        "mode": run.mode,
        "pipeline": run.pipeline_name,
        "submitted_by": run.submitted_by,
        "requested_at": run.requested_at,
    }
    return Searchable(metrics=metrics, params=params, tags=run.tags, attributes=attributes, subject=run)


@router.get("/runs", response_model=list[q.RunPublic])
def list_runs(
    caller: LineageReader,
    conn: ConnDep,
    page: PageDep,
    request: Request,
    response: Response,
    status: Literal["requested", "claimed", "running", "succeeded", "failed", "cancelled", "abandoned"] | None = None,
    filter: Annotated[
        str | None,
        Query(
            max_length=10_000,
            description="e.g. metrics.auc > 0.8 AND params.max_depth = '3' AND tags.team = 'risk' "
            "(final metric values; params compare as strings; AND only)",
        ),
    ] = None,
) -> list[q.RunPublic]:
    """Runs, newest first; ``filter`` searches them by params, final metrics, tags and attributes
    (status, name, mode, pipeline, submitted_by)."""
    clauses = parse_filter(filter)
    after = page.after("runs")
    if not clauses:
        found = q.list_runs(conn, status=status, limit=page.limit + 1, after=after)
        return page.page(request, response, "runs", found, lambda r: (r.requested_at, r.id))
    hits: list[q.RunPublic] = []
    while len(hits) <= page.limit:
        batch = q.list_runs(conn, status=status, limit=SEARCH_SCAN, after=after)
        metrics = q.final_metrics_of(conn, [run.id for run in batch])
        hits.extend(run for run in batch if matches(clauses, _searchable(run, metrics[run.id])))
        if len(batch) < SEARCH_SCAN:
            break
        after = [batch[-1].requested_at, batch[-1].id]
    return page.page(request, response, "runs", hits, lambda r: (r.requested_at, r.id))


class DatasetRef(BaseModel):
    """A dataset version a run read."""

    id: str
    name: str
    number: int
    digest: str


class CodeRef(BaseModel):
    """The code version a run executed."""

    id: str
    repository: str
    commit: str


class ComparedRun(BaseModel):
    """One run of a comparison."""

    id: str
    name: str
    status: str
    pipeline_name: str | None
    pipeline_version: int | None
    params: dict[str, Any]
    metrics: dict[str, float] = Field(description="each metric's value at its highest step")
    tags: dict[str, str]
    datasets: list[DatasetRef]
    code: CodeRef | None
    requested_at: str
    finished_at: str | None


class RunComparison(BaseModel):
    """Runs side by side, with the keys whose values differ between them."""

    runs: list[ComparedRun]
    differing_params: list[str]
    differing_metrics: list[str]
    same_datasets: bool
    same_code: bool


def _differing(values: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for v in values for k in v})
    return [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in values}) > 1]


@router.get("/runs:compare", response_model=RunComparison)
def compare_runs(
    caller: LineageReader,
    conn: ConnDep,
    run: Annotated[list[str], Query(min_length=2, max_length=COMPARE_MAX, description="run ids, 2 to 10")],
) -> RunComparison:
    """A few runs side by side: params, final metrics, tags, dataset and code versions."""
    ids = list(dict.fromkeys(run))
    runs = q.runs_by_id(conn, ids)
    missing = [i for i in ids if i not in {r.id for r in runs}]
    if missing:
        raise NotFound(f"no run {missing[0]}", field="run")
    if len(runs) < 2:
        raise InvalidPayload("compare at least two different runs", field="run")
    metrics = q.final_metrics_of(conn, ids)
    compared = []
    for found in runs:
        datasets = [
            DatasetRef(id=d.id, name=d.name, number=d.number, digest=d.digest)
            for d in q.dataset_versions_by_id(conn, found.dataset_version_ids)
        ]
        code = q.code_version(conn, found.code_version_id) if found.code_version_id else None
        compared.append(
            ComparedRun(
                id=found.id,
                name=found.name,
                status=found.status,
                pipeline_name=found.pipeline_name,
                pipeline_version=found.pipeline_version,
                params=found.params,
                metrics=metrics[found.id],
                tags=found.tags,
                datasets=datasets,
                code=None if code is None else CodeRef(id=code.id, repository=code.repository, commit=code.commit),
                requested_at=found.requested_at,
                finished_at=found.finished_at,
            )
        )
    return RunComparison(
        runs=compared,
        differing_params=_differing([c.params for c in compared]),
        differing_metrics=_differing([c.metrics for c in compared]),
        same_datasets=len({tuple(d.digest for d in c.datasets) for c in compared}) == 1,
        same_code=len({None if c.code is None else c.code.commit for c in compared}) == 1,
    )


@router.get("/runs/{run_id}/metrics/{key}", response_model=list[q.MetricPoint])
def run_metric(
    run_id: IdPath,
    key: Annotated[str, Path(min_length=1, max_length=250)],
    caller: LineageReader,
    conn: ConnDep,
    page: PageDep,
    request: Request,
    response: Response,
) -> list[q.MetricPoint]:
    """The points of one metric of a run, by step."""
    kind = f"metrics/{run_id}/{key}"
    found = q.run_metrics(conn, run_id, key, limit=page.limit + 1, after=page.after(kind))
    return page.page(request, response, kind, found, lambda p: (p.step, p.position, p.seq))


@router.get("/models", response_model=list[q.ModelPublic])
def list_models(
    caller: LineageReader, conn: ConnDep, page: PageDep, request: Request, response: Response
) -> list[q.ModelPublic]:
    """Models by name."""
    found = q.list_models(conn, limit=page.limit + 1, after=page.after("models"))
    return page.page(request, response, "models", found, lambda m: (m.name,))


@router.get("/models/{name}/versions", response_model=list[q.ModelVersionPublic])
def model_versions(
    name: NamePath, caller: LineageReader, conn: ConnDep, page: PageDep, request: Request, response: Response
) -> list[q.ModelVersionPublic]:
    """The versions of a model, oldest first, with approval state, tags and description."""
    found = q.model_versions(conn, name, limit=page.limit + 1, after=page.after(f"models/{name}"))
    return page.page(request, response, f"models/{name}", found, lambda v: (v.number,))


@router.post("/models/{name}/versions/{version}/tags", response_model=WriteResult)
def tag_model_version(
    name: NamePath, version: VersionPath, body: TagsBody, caller: LineageWriter, ledger: LedgerDep, response: Response
) -> object:
    """Set tags of a model version (they describe it; they never approve or deploy it)."""
    return written(response, ledger.tag_model_version(name, version, body.tags, actor=caller.actor))


@router.put("/models/{name}/versions/{version}/description", response_model=WriteResult)
def describe_model_version(
    name: NamePath,
    version: VersionPath,
    body: DescriptionBody,
    caller: LineageWriter,
    ledger: LedgerDep,
    response: Response,
) -> object:
    """Set the description of a model version."""
    return written(response, ledger.describe_model_version(name, version, body.description, actor=caller.actor))
