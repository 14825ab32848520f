"""Signed provenance of a run, served by the API: the run's manifest, read from
the manifests projection, turned into an in-toto Statement with SLSA Provenance
v1 and wrapped in a DSSE envelope signed by the ledger key.

The pure parts (PAE, the statement, signing and verification) live in
:mod:`domain.integrity.provenance`; they are re-exported here so callers of the service
find the whole surface in one place.
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
from projections.manifests import manifest

__all__ = [
    "PAYLOAD_TYPE",
    "EnvelopeNotVerified",
    "InvalidEnvelope",
    "ProvenanceNotReady",
    "pae",
    "provenance_statement",
    "run_provenance",
    "sign_envelope",
    "verify_envelope",
]


def run_provenance(conn: Connection, run_id: str, signer: SigningKey) -> dict[str, Any]:
    """The DSSE envelope of ``run_id``'s provenance, signed by ``signer``.

    Raises :class:`NotFound` when the run has no manifest yet and
    :class:`ProvenanceNotReady` when it has not succeeded.
    """
    found = manifest(conn, run_id)
    if found is None:
        raise NotFound(f"no manifest for run {run_id}: the run is unknown or not projected yet", field="run_id")
    return sign_envelope(provenance_statement(found.document), signer)
