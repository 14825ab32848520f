"""Reproducibility manifests of runs and their signed provenance (DSSE / in-toto / SLSA)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from domain.errors import NotFound
from projections import manifests as m
from projections import usage_queries as u
from service.api.deps import ConnDep, LineageReader, ServicesDep
from service.application import provenance

router = APIRouter(prefix="/v1", tags=["manifests"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


class DsseSignature(BaseModel):
    """One signature of a DSSE envelope: the signing key's id and the base64 signature of the PAE."""

    keyid: str
    sig: str


class DsseEnvelope(BaseModel):
    """A DSSE envelope: a base64 in-toto Statement and its signatures."""

    payloadType: str = Field(examples=[provenance.PAYLOAD_TYPE])
    payload: str
    signatures: list[DsseSignature]


@router.get("/runs/{run_id}/manifest", response_model=m.ManifestPublic)
def run_manifest(run_id: IdPath, caller: LineageReader, conn: ConnDep, services: ServicesDep) -> m.ManifestPublic:
    """The run's reproducibility manifest: inputs, environment, outputs, resources and every event by hash,
    with what the resources cost at the configured rates."""
    found = m.manifest(conn, run_id)
    if found is None:
        raise NotFound(f"no manifest for run {run_id}: the run is unknown or not projected yet", field="run_id")
    return found.model_copy(update={"cost": u.run_cost(found.document.get("resources"), services.settings.rates)})


@router.get("/runs/{run_id}/provenance", response_model=DsseEnvelope)
def run_provenance(run_id: IdPath, caller: LineageReader, conn: ConnDep, services: ServicesDep) -> DsseEnvelope:
    """SLSA provenance of a succeeded run as an in-toto Statement in a DSSE envelope signed by the ledger key."""
    envelope = provenance.run_provenance(conn, run_id, services.ledger.signer, services.settings.rates)
    return DsseEnvelope.model_validate(envelope)
