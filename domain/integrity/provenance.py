"""Build provenance for a run: an in-toto Statement v1 carrying a SLSA Provenance v1
predicate, made from the run's reproducibility manifest and wrapped in a DSSE
envelope signed by the ledger key.

DSSE (https://github.com/secure-systems-lab/dsse) signs the pre-authentication
encoding ``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``,
so a signature over one payload type can never be replayed as another. Standard
tooling (``in-toto``, ``slsa-verifier``, ``cosign verify-blob-attestation``) reads
the envelope; :func:`verify_envelope` is the same check with nothing but the
ledger's public key.

Everything here is pure: the manifest comes from the manifests read model, the
signer from the service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.errors import InvalidPayload, LedgerError, RuleViolated
from domain.integrity.canonical import canonical_json
from domain.integrity.keys import SigningKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://mlledger.dev/run-kinds/{kind}/v1"
RUNNER_BUILDER = "https://mlledger.dev/runner/{runner_id}"
CLIENT_BUILDER = "https://mlledger.dev/client-reported"
"""The builder of a run a client trained elsewhere and reported: no runner vouches for it."""


class InvalidEnvelope(LedgerError):
    """A DSSE envelope that is malformed or does not carry an in-toto statement."""

    title = "Invalid provenance envelope"


class EnvelopeNotVerified(InvalidEnvelope):
    """No signature of the envelope verifies with the given public key."""

    title = "Provenance signature does not verify"


class ProvenanceNotReady(RuleViolated):
    """Provenance describes what a run produced, so only a succeeded run has one."""

    title = "Provenance not ready"


def stable_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON, or sorted compact JSON for values it refuses.

    Payload values read back from canonical envelopes may hold integers beyond
    2**53 (canonical JSON writes a float such as 1e16 as digits); canonical JSON
    refuses those, yet a manifest holding one must still have a digest.
    """
    try:
        return canonical_json(value, path="manifest")
    except InvalidPayload:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_digest(document: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the manifest document's :func:`stable_json`."""
    return "sha256:" + hashlib.sha256(stable_json(document)).hexdigest()


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``body`` of ``payload_type``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def _sha256_hex(digest: str | None) -> str | None:
    if not digest or not digest.startswith("sha256:"):
        return None
    return digest.removeprefix("sha256:")


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _dependencies(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Datasets by name and number, then the code by commit and by archive."""
    dependencies: list[dict[str, Any]] = []
    for dataset in inputs.get("datasets") or []:
        where = f"{dataset['name']}/{dataset['number']}" if dataset.get("name") is not None else f"id/{dataset['id']}"
        entry: dict[str, Any] = {"uri": f"mlledger:dataset/{where}"}
        if (hex_digest := _sha256_hex(dataset.get("digest"))) is not None:
            entry["digest"] = {"sha256": hex_digest}
        dependencies.append(entry)
    code = inputs.get("code")
    if code:
        if code.get("repository") and code.get("commit"):
            dependencies.append(
                {"uri": f"git+{code['repository']}@{code['commit']}", "digest": {"gitCommit": code["commit"]}}
            )
        if (hex_digest := _sha256_hex(code.get("archive_digest"))) is not None:
            dependencies.append({"uri": f"mlledger:code/{code['id']}/archive", "digest": {"sha256": hex_digest}})
    return dependencies


def provenance_statement(manifest: dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 with SLSA Provenance v1 of a succeeded run's manifest.

    One subject per artifact the run produced; the manifest itself, by digest,
    is a byproduct, so the whole record of the run is bound to the signature.
    Raises :class:`ProvenanceNotReady` for a run that has not succeeded.
    """
    run_id = manifest["run_id"]
    if manifest.get("status") != "succeeded":
        raise ProvenanceNotReady(
            f"run {run_id} is {manifest.get('status')}; provenance exists once it has succeeded", field="run_id"
        )
    inputs: dict[str, Any] = manifest["inputs"]
    pipeline: dict[str, Any] = inputs.get("pipeline") or {}
    execution: dict[str, Any] = manifest.get("execution") or {}
    environment: dict[str, Any] = manifest.get("environment") or {}
    subjects = [
        {"name": artifact["name"], "digest": {"sha256": _sha256_hex(artifact["digest"])}}
        for artifact in manifest["outputs"]["artifacts"]
    ]
    runner_id = execution.get("runner_id")
    builder = RUNNER_BUILDER.format(runner_id=runner_id) if runner_id else CLIENT_BUILDER
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE.format(kind=pipeline.get("kind") or manifest.get("mode") or "unknown"),
            "externalParameters": {
                "pipeline": {
                    "name": pipeline.get("name"),
                    "version": pipeline.get("version"),
                    "spec_digest": pipeline.get("spec_digest"),
                },
                "params": inputs.get("params", {}),
                "seed": inputs.get("seed"),
                "device": inputs.get("device_requested"),
            },
            "internalParameters": _without_none(
                {"environment_digest": environment.get("digest"), "device": execution.get("device")}
            ),
            "resolvedDependencies": _dependencies(inputs),
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": _without_none(
                {
                    "invocationId": run_id,
                    "startedOn": execution.get("started_at"),
                    "finishedOn": execution.get("finished_at"),
                }
            ),
            "byproducts": [
                {
                    "name": "manifest",
                    "uri": f"mlledger:run/{run_id}/manifest",
                    "digest": {"sha256": _sha256_hex(manifest_digest(manifest))},
                    "mediaType": "application/json",
                }
            ],
        },
    }
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def sign_envelope(statement: dict[str, Any], signer: SigningKey) -> dict[str, Any]:
    """Wrap ``statement`` in a DSSE envelope signed by ``signer`` over its PAE."""
    body = stable_json(statement)
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": signer.key_id, "sig": signer.sign(pae(PAYLOAD_TYPE, body))}],
    }


def _b64decode(text: Any, field: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows either)."""
    if not isinstance(text, str):
        raise InvalidEnvelope(f"{field} must be a base64 string", field=field)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEnvelope(f"{field} is not valid base64", field=field) from None


def verify_envelope(envelope: dict[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check a DSSE envelope with ``public_key``; return the in-toto statement it carries.

    Raises :class:`InvalidEnvelope` for a malformed envelope, another payload type
    or a payload that is not an in-toto Statement v1, and
    :class:`EnvelopeNotVerified` when no signature verifies. Key ids are hints
    only (DSSE): every signature is tried.
    """
    if not isinstance(envelope, dict):
        raise InvalidEnvelope("the envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise InvalidEnvelope(f"payloadType is {payload_type!r}, not {PAYLOAD_TYPE!r}", field="payloadType")
    body = _b64decode(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise InvalidEnvelope("the envelope has no signatures", field="signatures")
    message = pae(payload_type, body)
    for index, entry in enumerate(signatures):
        if not isinstance(entry, dict):
            raise InvalidEnvelope("each signature must be an object", field=f"signatures.{index}")
        signature = _b64decode(entry.get("sig"), f"signatures.{index}.sig")
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            continue
        break
    else:
        raise EnvelopeNotVerified(
            "no signature of the envelope verifies with the given public key: "
            "the payload was altered, the signature is damaged, or another key signed it",
            field="signatures",
        )
    try:
        statement = json.loads(body)
    except ValueError:
        raise InvalidEnvelope("the payload is not JSON", field="payload") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise InvalidEnvelope(f"the payload is not an in-toto statement ({STATEMENT_TYPE})", field="payload")
    return statement
