"""Build an export bundle: select the scope, write the documents, record the export,
make sure a signed checkpoint covers everything, and write the zip.

The order matters. Manifests are read before the events, so every event a
manifest lists is in the bundle; the documents (reports, manifests, provenance)
are made before ``Export.Created``, which names their digests and commits to
the exact events; the transparency log then takes in ``Export.Created`` and a
checkpoint is published if none covers it yet, so the export record itself is
proven like every other event. ``Export.Packed`` finally records the archive's
digest and size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zipfile
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from domain.aggregate import aggregate_type_of
from domain.errors import InvalidPayload, NotFound
from domain.export import Export, events_commitment
from domain.integrity.ledger_key import LedgerKeyring
from domain.integrity.provenance import stable_json
from domain.integrity.sealing import SealedEvent
from domain.integrity.witness import CheckpointNotWitnessed
from domain.principal import Principal
from domain.report import Report
from projections import transparency_log as tlog
from projections.manifests import manifest
from service.application.provenance import document_provenance
from service.bootstrap import Services
from service.exports import proofs
from service.exports.document import render_html, render_pdf
from service.exports.model_card import ModelCard, prediction_statistics
from service.exports.readme import readme_text
from service.exports.scope import ExportRequest, leaf_indexes, select_scope
from service.exports.verify_bundle import (
    CONSISTENCY,
    EVENTS,
    FORMAT,
    INCLUSION,
    INCLUSION_LINES,
    INDEX,
    KEYRING_LINES,
    README,
    VERIFIER,
    WITNESS_POLICY,
    Summary,
    attachment_name,
    checkpoint_name,
    event_line,
    manifest_name,
    provenance_name,
    verify_bundle,
)
from service.ops import witnessing
from service.ops.projector import publish_checkpoint_if_due
from service.store.persistence import EventRow, read_events

MAX_BUNDLE_BYTES = 4 * 1024**3
CHECKPOINT_ATTEMPTS = 20


@dataclass(frozen=True)
class ExportResult:
    """A written bundle and the export recorded for it."""

    export_id: str
    bundle_digest: str
    size: int
    path: Path
    events: int
    position: int
    seconds: float


@dataclass(frozen=True)
class _Sealed:
    row: EventRow
    sealed: SealedEvent


_HEADER = re.compile(rb'\{"hash":"([0-9a-f]{64})","key_id":"([0-9a-f]{16})","signature":"([A-Za-z0-9+/=]+)"\}\n')


def _open_seal(row: EventRow) -> _Sealed:
    """The seal of a stored record; the header the ledger writes is parsed directly (a hundred thousand
    ``json.loads`` calls cost more than the rest of the export), anything else the general way."""
    found = _HEADER.match(row.record)
    if found is None:
        return _Sealed(row, SealedEvent.from_record(row.record))
    hash_hex, key_id, signature = (group.decode("ascii") for group in found.groups())
    return _Sealed(
        row, SealedEvent(envelope=row.record[found.end() :], hash=hash_hex, signature=signature, key_id=key_id)
    )


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _documents(
    services: Services, card: ModelCard, manifests: dict[str, dict[str, Any]], attachments: dict[str, bytes]
) -> dict[str, bytes]:
    """Every file of the bundle that the export record names by digest."""
    files: dict[str, bytes] = dict(attachments)
    for run_id, document in sorted(manifests.items()):
        files[manifest_name(run_id)] = stable_json(document)
        if document.get("status") == "succeeded":
            envelope = document_provenance(document, services.ledger.signer, services.settings.rates)
            files[provenance_name(run_id)] = json.dumps(envelope, indent=2).encode("utf-8")
    report = card.document()
    files["reports/model_card.html"] = render_html(report)
    files["reports/model_card.pdf"] = render_pdf(report)
    for name, png in report.figures.items():
        files[f"reports/plots/{name}"] = png
    files[VERIFIER] = Path(__file__).with_name("verify_bundle.py").read_bytes()
    return files


def _attachments(services: Services, sealed: list[_Sealed]) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files the latest publication of each report names, read (digest-checked) from the blob store."""
    latest: dict[str, dict[str, str]] = {}
    for item in sealed:
        if item.row.topic == Report.Published.TOPIC:
            latest[item.row.aggregate_id] = item.sealed.envelope_fields()["payload"]["attachments"]
    files: dict[str, bytes] = {}
    paths: dict[str, str] = {}
    for report_id, attached in latest.items():
        for name, digest in sorted(attached.items()):
            if services.blobs.exists(digest):
                path = attachment_name(report_id, name, digest)
                files[path] = b"".join(services.blobs.read_verified(digest))
                paths[digest] = path
    return files, paths


def _ensure_checkpoint(services: Services, position: int) -> tlog.StoredCheckpoint:
    """Log every event up to ``position`` and return a signed checkpoint that covers it."""
    for _ in range(CHECKPOINT_ATTEMPTS):
        services.runner.catch_up("transparency_log")
        with services.engine.connect() as conn:
            leaf = tlog.leaf_for_notification(conn, position)
            latest = tlog.latest_checkpoint(conn)
        if leaf is not None and latest is not None and latest.tree_size > leaf.leaf_index:
            return _witnessed(services, leaf.leaf_index, latest)
        if leaf is not None:
            publish_checkpoint_if_due(services, force=True)
        else:
            time.sleep(0.05)  # the event is committed but another projector holds the log's batch
    raise RuntimeError(f"no checkpoint covers ledger position {position}; is the transparency log projecting?")


def _witnessed(services: Services, leaf_index: int, latest: tlog.StoredCheckpoint) -> tlog.StoredCheckpoint:
    """With witnesses configured, a checkpoint covering ``leaf_index`` that meets their policy (submitted now)."""
    policy = witnessing.witness_policy(services.settings)
    if policy is None:
        return latest
    for _ in range(2):
        with services.engine.connect() as conn:
            view = witnessing.latest_witnessed(conn, policy)
        if view is not None and view.checkpoint.tree_size > leaf_index:
            return view.checkpoint
        witnessing.submit_to_witnesses(services)
    raise CheckpointNotWitnessed(
        f"no checkpoint covering ledger leaf {leaf_index} meets the witness policy yet (are the witnesses "
        "reachable?); the export can be retried once they cosign"
    )


def _keys(sealed: list[_Sealed]) -> dict[str, bytes]:
    """``keys/``: the ledger keys (PEM) and the approvers' registered keys (PEM)."""
    files: dict[str, bytes] = {}
    for item in sealed:
        if item.row.topic in (LedgerKeyring.Established.TOPIC, LedgerKeyring.Rotated.TOPIC):
            payload = item.sealed.envelope_fields()["payload"]
            files[f"keys/ledger/{payload['key_id']}.pem"] = payload["public_key_pem"].encode("ascii")
        elif item.row.topic == Principal.SigningKeyRegistered.TOPIC:
            payload = item.sealed.envelope_fields()["payload"]
            path = f"keys/approvers/{item.row.aggregate_id}/{payload['key_id']}.pem"
            files[path] = payload["public_key_pem"].encode("ascii")
    return files


def _lines(sealed: list[_Sealed], leaves: dict[int, int]) -> Iterator[bytes]:
    for item in sealed:
        yield event_line(
            position=item.row.position,
            leaf_index=leaves[item.row.position],
            aggregate_type=aggregate_type_of(item.row.topic),
            aggregate_id=item.row.aggregate_id,
            version=item.row.version,
            topic=item.row.topic,
            hash=item.sealed.hash,
            key_id=item.sealed.key_id,
            signature=item.sealed.signature,
            envelope=item.sealed.envelope,
        )


def _write_zip(target: Path, members: list[tuple[str, bytes | list[bytes]]], moment: datetime) -> None:
    stamp = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    with zipfile.ZipFile(target, "w", allowZip64=True) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED if name.endswith((".png", ".pdf")) else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as handle:
                for chunk in content if isinstance(content, list) else [content]:
                    handle.write(chunk)


def export_bundle(
    services: Services, request: ExportRequest, actor: str, destination: Path | None = None
) -> ExportResult:
    """Build the bundle of ``request``, record the export, store the archive; return what was written.

    The archive goes to the blob store (served by ``GET /v1/exports/{id}/bundle``)
    and, when ``destination`` is given, to that file too.
    """
    started = time.perf_counter()
    scope_record = request.scope()
    for index, principal_id in enumerate(request.shared_with):
        try:
            services.ledger.get(principal_id, Principal)
        except NotFound:
            raise InvalidPayload(f"no principal {principal_id} to share with", field=f"share_with.{index}") from None
    services.runner.catch_up()
    with services.engine.connect() as conn:
        scope = select_scope(services.ledger, conn, request)
        found = {str(run.id): manifest(conn, str(run.id)) for run in scope.runs}
        manifests = {run_id: m.document for run_id, m in found.items() if m is not None}
        statistics = prediction_statistics(conn, request.model_name, request.since, request.until)
    rows = read_events(services.engine, [*scope.aggregate_ids, *scope.prediction_ids])
    sealed = [_open_seal(row) for row in rows]
    attachments, attachment_paths = _attachments(services, sealed)
    card = ModelCard(scope.model, scope.versions, rows, manifests, statistics, scope_record, attachment_paths)
    files = _documents(services, card, manifests, attachments)
    keys = _keys(sealed)
    files[README] = readme_text(
        request, scope_record, len(rows), sorted(k for k in keys if "/ledger/" in k), services.settings.log_origin
    ).encode("utf-8")
    export = Export.create(
        model_name=request.model_name,
        scope=scope_record,
        shared_with=list(request.shared_with),
        event_count=len(rows),
        events_digest=events_commitment((i.row.position, i.sealed.hash) for i in sealed),
        files={name: _sha256(data) for name, data in files.items()},
        actor=actor,
    )
    recorded = services.ledger.save(export)[-1].notification.id
    latest = _ensure_checkpoint(services, recorded)
    sealed += [_open_seal(row) for row in read_events(services.engine, [export.id])]
    with services.engine.connect() as conn:
        leaves = leaf_indexes(conn, [item.row.position for item in sealed])
        sizes = [cp.tree_size for cp in tlog.all_checkpoints(conn) if cp.tree_size <= latest.tree_size]
        chosen = {sizes[bisect_right(sizes, leaf)] for leaf in leaves.values()} | {latest.tree_size}
        notes = {size: tlog.checkpoint_at(conn, size) for size in sorted(chosen)}
        policy = witnessing.witness_policy(services.settings)
        cosigned = {size: witnessing.cosigned(conn, cp, policy).note for size, cp in notes.items() if cp is not None}
        inclusion = proofs.inclusion_header(conn, latest.tree_size)
        inclusion_lines = list(
            proofs.inclusion_lines(
                conn, [(leaves[item.row.position], item.row.position) for item in sealed], latest.tree_size
            )
        )
        consistency = proofs.consistency_document(conn, sorted(chosen), latest.tree_size)
    keyring = list(_lines([item for item in sealed if item.row.aggregate_id == str(LedgerKeyring.create_id())], leaves))
    created_at = sealed[-1].sealed.envelope_fields()["recorded_at"]
    bundle_index = {
        "format": FORMAT,
        "export_id": str(export.id),
        "model": request.model_name,
        "scope": scope_record,
        "shared_with": export.shared_with,
        "created_at": created_at,
        "created_by": actor,
        "origin": services.settings.log_origin,
        "events": len(sealed),
        "tree_size": latest.tree_size,
        "checkpoints": sorted(chosen),
        "ledger_keys": sorted(k.split("/")[-1][:-4] for k in keys if "/ledger/" in k),
    }
    members: list[tuple[str, bytes | list[bytes]]] = [
        (README, files.pop(README)),
        (VERIFIER, files.pop(VERIFIER)),
        (INDEX, json.dumps(bundle_index, indent=2).encode("utf-8")),
        (EVENTS, [line + b"\n" for line in _lines(sealed, leaves)]),
        (KEYRING_LINES, b"".join(line + b"\n" for line in keyring)),
        *sorted(keys.items()),
        *[(checkpoint_name(size), note.encode("utf-8")) for size, note in cosigned.items()],
        *([(WITNESS_POLICY, policy.text.encode("utf-8"))] if policy is not None else []),
        (INCLUSION, json.dumps(inclusion, indent=1).encode("utf-8")),
        (INCLUSION_LINES, inclusion_lines),
        (CONSISTENCY, json.dumps(consistency, indent=1).encode("utf-8")),
        *sorted(files.items()),
    ]
    staging = services.blobs.tmp / f"export-{export.id}.zip"
    staging.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        _write_zip(staging, members, datetime.now(UTC))
        size = staging.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise ValueError(f"the bundle is {size} bytes, over the limit of {MAX_BUNDLE_BYTES}")
        with staging.open("rb") as handle:
            stored = services.blobs.put_chunks(iter(lambda: handle.read(1024 * 1024), b""), max_bytes=size)
        if destination is not None:
            partial = destination.with_name(destination.name + ".partial")
            shutil.copyfile(staging, partial)
            os.replace(partial, destination)
    finally:
        staging.unlink(missing_ok=True)
    export.pack(stored.digest, stored.size, actor=actor)
    packed = services.ledger.save(export)[-1].notification.id
    return ExportResult(
        export_id=str(export.id),
        bundle_digest=stored.digest,
        size=stored.size,
        path=destination or stored.path,
        events=len(sealed),
        position=packed,
        seconds=time.perf_counter() - started,
    )


def export_and_verify(
    services: Services,
    model_name: str,
    destination: Path | None = None,
    *,
    actor: str = "system:demo",
    say: Callable[[str], None] = print,
) -> Summary:
    """Export every record of ``model_name`` and verify the bundle as a regulator would; say what happened.

    The bundle goes to ``destination`` (default ``<data dir>/exports/<model>.zip``).
    Raises :class:`BundleProblem` if it does not verify.
    """
    target = destination or services.settings.data_dir / "exports" / f"{model_name}.zip"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = export_bundle(services, ExportRequest.of(model_name), actor=actor, destination=target)
    say(
        f"exported {result.events} events of {model_name} to {target} ({result.size:,} bytes, "
        f"{result.bundle_digest}) in {result.seconds:.2f} s"
    )
    summary = verify_bundle(target)
    for line in summary.lines():
        say(f"  {line}")
    return summary
