"""``README.txt`` of a bundle: what it holds and how to verify it, for its recipient."""

from __future__ import annotations

from typing import Any

from service.exports.scope import ExportRequest

_TEXT = """\
ML Ledger export bundle
=======================

Model:        {model}
Window:       {window}
Predictions:  {predictions}
Events:       {events} signed events (plus the signed record of this export)
Ledger keys:  {keys}
Log origin:   {origin}

Everything in this bundle can be checked offline with the ledger's public key
and nothing else. You need Python 3.11 or newer and the `cryptography` package:

    python3 -m venv venv
    venv/bin/pip install cryptography
    venv/bin/python verify_bundle.py bundle.zip --public-key ledger-public-key.pem

Obtain the ledger's public key (or its key id, printed by the verifier) from
the organisation that runs the ledger through a channel you trust; without
--public-key the verifier checks that the bundle is internally consistent and
signed by the keys it carries, and tells you to compare their ids. The
verifier reads the archive in place; add --extract DIR to write its files out
once it has passed. It prints a summary and exits 0, or prints FAILED and the
first problem and exits 1.

Contents
--------

events.jsonl      One line per event, in ledger order: position, transparency-log
                  leaf index, aggregate, version, type, SHA-256 hash, Ed25519
                  signature and key id, and the event's canonical JSON (RFC 8785)
                  exactly as it was hashed and signed. Each record is exported
                  whole (from version 1); each event names the hash of the one
                  before it in `prev_hash`. Prediction inputs of data subjects are
                  ciphertext; an erased subject's key no longer exists.
checkpoints/      Signed checkpoints of the ledger's transparency log (C2SP
                  tlog-checkpoint signed notes): for each event the first one that
                  covered it, and the latest.
proofs/           inclusion.json and inclusion.jsonl: one RFC 9162 inclusion proof
                  for all events together. inclusion.json names the tree size and
                  root; inclusion.jsonl has one JSON array a line, in leaf order:
                  [leaf index, position] for each event of this bundle and
                  [level, index, hash] for each subtree hash that covers leaves that
                  are not events of this bundle (`verify_bundle.py --audit-path
                  POSITION` prints any event's standard audit path).
                  consistency.json: RFC 9162 consistency proofs from every bundled
                  checkpoint to the latest.
keys/             ledger/<key id>.pem: every ledger signing key; keyring.jsonl: the
                  keyring's events (genesis and rotations, each signed by the key
                  before it). approvers/<principal>/<key id>.pem: the keys approvers
                  signed their approval statements with.
manifests/        Each run's reproducibility manifest (canonical JSON) and its
                  in-toto/SLSA provenance in a DSSE envelope signed by the ledger key.
reports/          model_card.html and model_card.pdf: the model card and the
                  datasheet, explainability, fairness, validation and monitoring
                  reports, approvals with their signed statements, deployment
                  history, overrides and erasure tombstones; plots/ holds the
                  figures, attachments/ the files the ledger's report events name.
bundle.json       An index of the above.

The signed export record (the `mlledger.export.Created.v1` event in
events.jsonl) names the SHA-256 of every file under manifests/ and reports/, of
this README and of verify_bundle.py, and commits to exactly which events the
bundle holds, so nothing can be added, removed or replaced unnoticed.
"""


def readme_text(request: ExportRequest, scope: dict[str, Any], events: int, key_files: list[str], origin: str) -> str:
    """The README of a bundle of ``request``."""
    window = f"{scope['from'] or 'the beginning'} to {scope['to'] or 'the time of export'}"
    predictions = scope["predictions"]
    if predictions == "sample":
        predictions = f"sample (at most {scope['sample_size']}, evenly spaced, plus every overridden one)"
    keys = ", ".join(name.rsplit("/", 1)[-1].removesuffix(".pem") for name in key_files)
    return _TEXT.format(
        model=request.model_name, window=window, predictions=predictions, events=events, keys=keys, origin=origin
    )
