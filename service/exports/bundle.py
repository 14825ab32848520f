"""Build an export bundle: select the scope, write the documents, record the export,
make sure a signed checkpoint covers everything, and write the zip.

The order matters. Manifests are read before the events, so every event a
manifest lists is in the bundle; the documents (reports, manifests, provenance)
are made before ``Export.Created``, which names their digests and commits to
the exact events; the transparency log then takes in ``Export.Created`` and a
checkpoint is published if none covers it yet, so the export record itself is
proven like every other event. ``Export.Packed`` finally records the archive's
digest and size.

The scope's events are never all in memory: they are read as streams
(:mod:`service.exports.scope_events`), once (mostly as record heads) for the
export record's commitment, the model card and the keys, then straight into the
zip with the inclusion proof's lines beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
import zipfile
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from domain.aggregate import aggregate_type_of
from domain.errors import InvalidPayload, NotFound
from domain.export import Export, events_commitment
from domain.integrity.ledger_key import KEYRING_ID, LedgerKeyring
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
from service.exports.model_card import UNREAD_TOPICS, CardEvents, ModelCard, prediction_statistics
from service.exports.readme import readme_text
from service.exports.scope import ExportRequest, leaf_indexes, select_scope
from service.exports.scope_events import ScopeEvents, ScopeRow
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


@dataclass
class _Gathered:
    """What the first pass over the scope's events takes from them (never the events themselves)."""

    card: CardEvents = field(default_factory=CardEvents)
    published: dict[str, dict[str, str]] = field(default_factory=dict)
    """Report id -> the attachments its latest publication names."""
    keys: dict[str, bytes] = field(default_factory=dict)
    count: int = 0
    last_position: int = 0
    digest: str = ""


def _gather(events: ScopeEvents) -> _Gathered:
    """One pass over the scope (the bulk of it as record heads): the export record's commitment and count,
    the model card's events, the reports' attachments and the keys."""
    gathered = _Gathered()

    def pairs() -> Iterator[tuple[int, str]]:
        for row in events.rows(heads_only=UNREAD_TOPICS):
            seal = row.seal()
            gathered.count += 1
            gathered.last_position = row.position
            gathered.card.add(row.position, row.aggregate_id, row.topic, row.record)
            if row.topic == Report.Published.TOPIC:
                gathered.published[row.aggregate_id] = seal.envelope_fields()["payload"]["attachments"]
            _add_key(gathered.keys, row, seal)
            yield row.position, seal.hash

    gathered.digest = events_commitment(pairs())
    return gathered


def _attachments(services: Services, published: dict[str, dict[str, str]]) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files the latest publication of each report names, read (digest-checked) from the blob store."""
    files: dict[str, bytes] = {}
    paths: dict[str, str] = {}
    for report_id, attached in published.items():
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


def _add_key(files: dict[str, bytes], row: ScopeRow, seal: SealedEvent) -> None:
    """``keys/``: a ledger key (PEM) or an approver's registered key (PEM), if ``row`` records one."""
    if row.topic in (LedgerKeyring.Established.TOPIC, LedgerKeyring.Rotated.TOPIC):
        payload = seal.envelope_fields()["payload"]
        files[f"keys/ledger/{payload['key_id']}.pem"] = payload["public_key_pem"].encode("ascii")
    elif row.topic == Principal.SigningKeyRegistered.TOPIC:
        payload = seal.envelope_fields()["payload"]
        files[f"keys/approvers/{row.aggregate_id}/{payload['key_id']}.pem"] = payload["public_key_pem"].encode("ascii")


def _line(row: ScopeRow | EventRow, leaf_index: int) -> bytes:
    seal = row.seal() if isinstance(row, ScopeRow) else SealedEvent.from_record(row.record)
    return event_line(
        position=row.position,
        leaf_index=leaf_index,
        aggregate_type=aggregate_type_of(row.topic),
        aggregate_id=row.aggregate_id,
        version=row.version,
        topic=row.topic,
        hash=seal.hash,
        key_id=seal.key_id,
        signature=seal.signature,
        envelope=seal.envelope,
    )


def _counted(rows: Iterator[ScopeRow], expected: int) -> Iterator[ScopeRow]:
    """``rows``, each with its leaf; RuntimeError unless there are exactly ``expected`` (the scope's events
    the export record commits to, and its own)."""
    count = 0
    for row in rows:
        if row.leaf_index is None:
            raise RuntimeError(f"ledger position {row.position} is not in the transparency log yet")
        count += 1
        yield row
    if count != expected:
        raise RuntimeError(
            f"the export holds {expected} events but the ledger now gives {count}: events of its records were "
            "committed while it ran; export again"
        )


_PAIR = struct.Struct(">QQ")


class _EventsPass:
    """``events.jsonl`` straight from the database, noting on the way what the members after it need: the
    checkpoint that first covered each event, and each event's (leaf, position) for the inclusion proof
    (kept in a temporary file, 16 bytes an event, rather than in memory)."""

    def __init__(self, events: ScopeEvents, expected: int, sizes: list[int], latest: int) -> None:
        self.events, self.expected, self.sizes = events, expected, sizes
        self.chosen = {latest}
        self.pairs = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__

    def __enter__(self) -> _EventsPass:
        return self

    def __exit__(self, *_: object) -> None:
        self.pairs.close()

    def lines(self) -> Iterator[bytes]:
        """The lines of events.jsonl (newline included)."""
        sizes, chosen, pairs = self.sizes, self.chosen, self.pairs
        for row in _counted(self.events.rows(), self.expected):
            assert row.leaf_index is not None
            chosen.add(sizes[bisect_right(sizes, row.leaf_index)])
            pairs.write(_PAIR.pack(row.leaf_index, row.position))
            yield _line(row, row.leaf_index) + b"\n"

    def proven(self) -> Iterator[tuple[int, int]]:
        """(leaf index, position) of every event written, in order."""
        self.pairs.seek(0)
        while block := self.pairs.read(_PAIR.size * 4096):
            yield from _PAIR.iter_unpack(block)


def _write_zip(target: Path, members: Iterable[tuple[str, bytes | Iterable[bytes]]], moment: datetime) -> None:
    """Write the members in order; a member given as chunks (a stream) is written as they come."""
    stamp = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    with zipfile.ZipFile(target, "w", allowZip64=True) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED if name.endswith((".png", ".pdf")) else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as handle:
                for chunk in [content] if isinstance(content, bytes) else content:
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
    events = ScopeEvents(services.engine, [*scope.aggregate_ids, *scope.prediction_ids])
    gathered = _gather(events)
    attachments, attachment_paths = _attachments(services, gathered.published)
    card = ModelCard(scope.model, scope.versions, gathered.card, manifests, statistics, scope_record, attachment_paths)
    files = _documents(services, card, manifests, attachments)
    keys = gathered.keys
    files[README] = readme_text(
        request, scope_record, gathered.count, sorted(k for k in keys if "/ledger/" in k), services.settings.log_origin
    ).encode("utf-8")
    export = Export.create(
        model_name=request.model_name,
        scope=scope_record,
        shared_with=list(request.shared_with),
        event_count=gathered.count,
        events_digest=gathered.digest,
        files={name: _sha256(data) for name, data in files.items()},
        actor=actor,
    )
    recorded = services.ledger.save(export)[-1].notification.id
    latest = _ensure_checkpoint(services, recorded)
    own = read_events(services.engine, [export.id])
    keyring = [r for r in read_events(services.engine, [KEYRING_ID]) if r.position <= gathered.last_position]
    events.until, events.also = gathered.last_position, str(export.id)
    total = gathered.count + len(own)
    with services.engine.connect() as conn:
        sizes = [cp.tree_size for cp in tlog.all_checkpoints(conn) if cp.tree_size <= latest.tree_size]
        keyring_leaves = leaf_indexes(conn, [row.position for row in keyring])
    bundle_index = {
        "format": FORMAT,
        "export_id": str(export.id),
        "model": request.model_name,
        "scope": scope_record,
        "shared_with": export.shared_with,
        "created_at": SealedEvent.from_record(own[-1].record).envelope_fields()["recorded_at"],
        "created_by": actor,
        "origin": services.settings.log_origin,
        "events": total,
        "tree_size": latest.tree_size,
        "checkpoints": [],
        "ledger_keys": sorted(k.split("/")[-1][:-4] for k in keys if "/ledger/" in k),
    }
    policy = witnessing.witness_policy(services.settings)

    def members(passing: _EventsPass) -> Iterator[tuple[str, bytes | Iterable[bytes]]]:
        """The bundle's members in order, each made when the one before it is written: what follows
        events.jsonl needs what writing it found (the checkpoints covering the events, their leaves)."""
        yield README, files.pop(README)
        yield VERIFIER, files.pop(VERIFIER)
        yield EVENTS, passing.lines()
        yield KEYRING_LINES, b"".join(_line(row, keyring_leaves[row.position]) + b"\n" for row in keyring)
        yield from sorted(keys.items())
        chosen = sorted(passing.chosen)
        yield INDEX, json.dumps({**bundle_index, "checkpoints": chosen}, indent=2).encode("utf-8")
        with services.engine.connect() as conn:
            for size in chosen:
                checkpoint = tlog.checkpoint_at(conn, size)
                if checkpoint is not None:
                    yield checkpoint_name(size), witnessing.cosigned(conn, checkpoint, policy).note.encode("utf-8")
            if policy is not None:
                yield WITNESS_POLICY, policy.text.encode("utf-8")
            yield INCLUSION, json.dumps(proofs.inclusion_header(conn, latest.tree_size), indent=1).encode("utf-8")
            yield INCLUSION_LINES, proofs.inclusion_lines(conn, passing.proven(), latest.tree_size)
            consistency = proofs.consistency_document(conn, chosen, latest.tree_size)
            yield CONSISTENCY, json.dumps(consistency, indent=1).encode("utf-8")
        yield from sorted(files.items())

    staging = services.blobs.tmp / f"export-{export.id}.zip"
    staging.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with _EventsPass(events, total, sizes, latest.tree_size) as passing:
            _write_zip(staging, members(passing), datetime.now(UTC))
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
        events=total,
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
