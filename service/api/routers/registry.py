"""Lists from the registry read model."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from domain.errors import NotFound
from projections import registry_queries as q
from service.api.deps import AdminCaller, ConnDep, LineageReader

router = APIRouter(prefix="/v1", tags=["registry"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/principals", response_model=list[q.PrincipalPublic])
def list_principals(caller: AdminCaller, conn: ConnDep) -> list[q.PrincipalPublic]:
    """Every principal (admin)."""
    return q.list_principals(conn)


@router.get("/datasets/{name}/versions", response_model=list[q.DatasetVersionPublic])
def dataset_versions(name: NamePath, caller: LineageReader, conn: ConnDep) -> list[q.DatasetVersionPublic]:
    """The versions of a dataset, oldest first."""
    return q.dataset_versions(conn, name)


@router.get("/pipelines/{name}/specs/{version}", response_model=q.PipelineSpecPublic)
def pipeline_spec(
    name: NamePath, version: Annotated[int, Path(ge=1, le=1_000_000)], caller: LineageReader, conn: ConnDep
) -> q.PipelineSpecPublic:
    """One spec version of a pipeline."""
    found = q.pipeline(conn, name, version)
    if found is None:
        raise NotFound(f"pipeline {name} has no spec version {version}", field="version")
    return found


@router.get("/runs", response_model=list[q.RunPublic])
def list_runs(
    caller: LineageReader,
    conn: ConnDep,
    status: Literal["requested", "running", "succeeded", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[q.RunPublic]:
    """Runs, newest first."""
    return q.list_runs(conn, status=status, limit=limit)


@router.get("/runs/{run_id}/metrics/{key}", response_model=list[q.MetricPoint])
def run_metric(
    run_id: IdPath, key: Annotated[str, Path(min_length=1, max_length=250)], caller: LineageReader, conn: ConnDep
) -> list[q.MetricPoint]:
    """Every point of one metric of a run, by step."""
    return q.run_metrics(conn, run_id, key)


@router.get("/models", response_model=list[q.ModelPublic])
def list_models(caller: LineageReader, conn: ConnDep) -> list[q.ModelPublic]:
    """Every model."""
    return q.list_models(conn)


@router.get("/models/{name}/versions", response_model=list[q.ModelVersionPublic])
def model_versions(name: NamePath, caller: LineageReader, conn: ConnDep) -> list[q.ModelVersionPublic]:
    """The versions of a model, oldest first, with approval state."""
    return q.model_versions(conn, name)
