"""Signed provenance of a run, served by the API: the run's manifest, read from
the manifests projection, turned into an in-toto Statement with SLSA Provenance
v1 and wrapped in a DSSE envelope signed by the ledger key.

The pure parts (PAE, the statement, signing and verification) live in
:mod:`domain.integrity.provenance`; they are re-exported here so callers of the service
find the whole surface in one place. A run that recorded what it used gets one more
byproduct, ``resources``, whose annotations carry the figures and their cost at the
service's rates (with the rates), so the signature covers them too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from domain.errors import NotFound
from domain.integrity.keys import SigningKey
from domain.integrity.provenance import (
    PAYLOAD_TYPE,
    EnvelopeNotVerified,
    InvalidEnvelope,
    ProvenanceNotReady,
    pae,
    provenance_statement,
    sign_envelope,
    verify_envelope,
)
from domain.usage import Rates, priced
from projections.manifests import manifest

__all__ = [
    "PAYLOAD_TYPE",
    "EnvelopeNotVerified",
    "InvalidEnvelope",
    "ProvenanceNotReady",
    "document_provenance",
    "pae",
    "provenance_statement",
    "resources_byproduct",
    "run_provenance",
    "sign_envelope",
    "verify_envelope",
]


def resources_byproduct(manifest_document: dict[str, Any], rates: Rates | None) -> dict[str, Any] | None:
    """The SLSA byproduct (a ResourceDescriptor) of what the run used and what it cost; None without resources."""
    resources = manifest_document.get("resources")
    if resources is None:
        return None
    annotations: dict[str, Any] = {"resources": resources}
    if rates is not None:
        annotations["cost"] = {**priced(resources, rates), "rates": rates.to_json()}
    return {
        "name": "resources",
        "uri": f"mlledger:run/{manifest_document['run_id']}/resources",
        "mediaType": "application/json",
        "annotations": annotations,
    }


def run_provenance(conn: Connection, run_id: str, signer: SigningKey, rates: Rates | None = None) -> dict[str, Any]:
    """The DSSE envelope of ``run_id``'s provenance, signed by ``signer``.

    Raises :class:`NotFound` when the run has no manifest yet and
    :class:`ProvenanceNotReady` when it has not succeeded. With ``rates``, the
    ``resources`` byproduct also says what the run cost.
    """
    found = manifest(conn, run_id)
    if found is None:
        raise NotFound(f"no manifest for run {run_id}: the run is unknown or not projected yet", field="run_id")
    return document_provenance(found.document, signer, rates)


def document_provenance(document: dict[str, Any], signer: SigningKey, rates: Rates | None = None) -> dict[str, Any]:
    """The DSSE envelope of a run's provenance built from its manifest ``document`` (with the resources
    byproduct when the run recorded them), signed by ``signer``: the API and export bundles both use it."""
    statement = provenance_statement(document)
    byproduct = resources_byproduct(document, rates)
    if byproduct is not None:
        statement["predicate"]["runDetails"]["byproducts"].append(byproduct)
    return sign_envelope(statement, signer)
