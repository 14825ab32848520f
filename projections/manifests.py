"""Reproducibility manifests: one JSON document per run saying exactly what went
in (pipeline spec, dataset and code versions, params, seed, requested device),
what it ran on (captured environment, runner, device), what came out (artifacts
by digest, final metrics), what it used (``resources``, once recorded), how
reproductions judged it, and every event of the
run by hash, so a manifest can be checked against the ledger event by event.

Run events name their inputs by id; the ``man_*`` lookup tables keep the few
facts of pipelines, dataset versions and code versions a manifest copies in,
so this projection depends on no other. Each document has a digest:
``sha256`` of its canonical JSON (see :func:`domain.integrity.provenance.manifest_digest`).

A batch touches each run's document once: documents are loaded on first use,
changed in memory and written at the end of the batch, so a run with many
metric batches costs one write per projection batch, not one per event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from domain.code import CodeVersion
from domain.dataset import DatasetVersion
from domain.integrity.provenance import manifest_digest
from domain.pipeline import Pipeline
from domain.run import Run, RunStatus
from projections.audit_trail import short_event_type
from projections.base import ProjectedEvent, Projection, handler_registry, insert_rows
from projections.tables import json_text, metadata
from projections.usage_queries import CostPublic

ID, NAME, DIGEST = sa.String(64), sa.String(200), sa.String(80)

run_manifests = sa.Table(
    "run_manifests",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("digest", DIGEST, nullable=False),
    sa.Column("updated_position", sa.BigInteger, nullable=False),
)
man_pipelines = sa.Table(
    "man_pipelines",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
)
man_pipeline_specs = sa.Table(
    "man_pipeline_specs",
    metadata,
    sa.Column("pipeline_id", ID, primary_key=True),
    sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("spec_digest", DIGEST, nullable=False),
)
man_dataset_versions = sa.Table(
    "man_dataset_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("digest", DIGEST, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("format", sa.Text, nullable=False),
)
man_code_versions = sa.Table(
    "man_code_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("repository", sa.String(500), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("archive_digest", DIGEST, nullable=True),
    sa.Column("entrypoint", sa.Text, nullable=True),
)

RUN_TOPICS = frozenset(
    topic for value in vars(Run).values() if isinstance(value, type) and (topic := getattr(value, "TOPIC", None))
)
"""Every event of a run is listed in its manifest, including kinds added later."""


class ManifestPublic(BaseModel):
    """A run's reproducibility manifest with its digest and the ledger position it reflects."""

    run_id: str
    digest: str
    """``sha256:<hex>`` of the document's canonical JSON (RFC 8785)."""
    position: int
    """Notification id of the newest event of the run in the document."""
    document: dict[str, Any]
    cost: CostPublic | None = None
    """What the document's ``resources`` cost at the service's rates now (outside the document and its digest)."""


def manifest(conn: Connection, run_id: str) -> ManifestPublic | None:
    """The manifest of ``run_id``; None when the run is unknown or not projected yet."""
    t = run_manifests
    row = conn.execute(sa.select(t).where(t.c.run_id == run_id)).first()
    if row is None:
        return None
    return ManifestPublic(
        run_id=row.run_id, digest=row.digest, position=row.updated_position, document=json.loads(row.document)
    )


@dataclass
class _Open:
    """A document being changed during a batch."""

    document: dict[str, Any]
    position: int
    new: bool


_HANDLERS, _on = handler_registry()


class Manifests(Projection):
    """Keeps ``run_manifests``: one reproducibility manifest per run."""

    name = "manifests"
    tables = (man_pipelines, man_pipeline_specs, man_dataset_versions, man_code_versions, run_manifests)

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        # (table, key) -> row of the man_* tables, read once: their rows never change once written
        self._facts: dict[tuple[str, Any], Any] = {}

    def begin_batch(self, conn: Connection) -> None:
        """Start with no documents loaded."""
        self._open = {}
        if len(self._facts) > 100_000:
            self._facts.clear()

    def reset(self, conn: Connection) -> None:
        """Delete every row and forget the facts read."""
        super().reset(conn)
        self._facts.clear()

    def _fact(self, conn: Connection, table: sa.Table, key: Any, where: Any) -> Any:
        """The row of ``table`` at ``key`` (a man_* table), from memory once read; None if there is none."""
        row = self._facts.get((table.name, key))
        if row is None:
            row = conn.execute(sa.select(table).where(where)).first()
            if row is not None:
                self._facts[(table.name, key)] = row
        return row

    def handle(self, conn: Connection, event: ProjectedEvent) -> None:
        """Apply the event's handler; list every run event in its run's manifest."""
        handler = _HANDLERS.get(event.topic)
        if handler is not None:
            handler(self, conn, event)
        if event.topic in RUN_TOPICS:
            opened = self._document(conn, event.aggregate_id)
            opened.document["events"].append(
                {
                    "type": short_event_type(event.topic),
                    "notification_id": event.notification_id,
                    "version": event.version,
                    "hash": event.hash,
                    "recorded_at": event.recorded_at,
                }
            )
            opened.position = event.notification_id

    def end_batch(self, conn: Connection) -> None:
        """Write every document the batch changed, with its new digest."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for run_id in sorted(self._open):
            opened = self._open[run_id]
            row = {
                "run_id": run_id,
                "document": json_text(opened.document),
                "digest": manifest_digest(opened.document),
                "updated_position": opened.position,
            }
            (inserts if opened.new else updates).append(row)
        if inserts:
            insert_rows(conn, run_manifests, inserts)
        if updates:
            conn.execute(
                run_manifests.update()
                .where(run_manifests.c.run_id == sa.bindparam("key"))
                .values(
                    document=sa.bindparam("document"),
                    digest=sa.bindparam("digest"),
                    updated_position=sa.bindparam("updated_position"),
                ),
                [{"key": row.pop("run_id"), **row} for row in updates],
            )
        self._open = {}

    def _document(self, conn: Connection, run_id: str) -> _Open:
        opened = self._open.get(run_id)
        if opened is None:
            row = conn.execute(
                sa.select(run_manifests.c.document, run_manifests.c.updated_position).where(
                    run_manifests.c.run_id == run_id
                )
            ).first()
            if row is None:
                raise LookupError(f"run_manifests has no document for run {run_id}")
            opened = self._open[run_id] = _Open(json.loads(row.document), row.updated_position, new=False)
        return opened

    # -- the facts a manifest copies in ------------------------------------------

    @_on(Pipeline.Created.TOPIC)
    def _pipeline_created(self, conn: Connection, e: ProjectedEvent) -> None:
        conn.execute(man_pipelines.insert(), dict(id=e.aggregate_id, name=e.payload["name"], kind=e.payload["kind"]))

    @_on(Pipeline.SpecVersioned.TOPIC)
    def _pipeline_spec(self, conn: Connection, e: ProjectedEvent) -> None:
        pipeline = self._fact(conn, man_pipelines, e.aggregate_id, man_pipelines.c.id == e.aggregate_id)
        if pipeline is None:
            raise LookupError(f"man_pipelines has no row for pipeline {e.aggregate_id}")
        p = e.payload
        conn.execute(
            man_pipeline_specs.insert(),
            dict(
                pipeline_id=e.aggregate_id,
                number=p["number"],
                name=pipeline.name,
                kind=pipeline.kind,
                spec=json_text(p["spec"]),
                spec_digest=p["spec_digest"],
            ),
        )

    @_on(DatasetVersion.Registered.TOPIC)
    def _dataset_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            man_dataset_versions.insert(),
            dict(
                id=e.aggregate_id,
                name=p["name"],
                number=p["number"],
                digest=p["digest"],
                size=p["size"],
                format=p["format"],
            ),
        )

    @_on(CodeVersion.Registered.TOPIC)
    def _code_registered(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        conn.execute(
            man_code_versions.insert(),
            dict(
                id=e.aggregate_id,
                repository=p["repository"],
                commit=p["commit"],
                archive_digest=p["archive_digest"],
                entrypoint=p["entrypoint"],
            ),
        )

    # -- runs ---------------------------------------------------------------------

    def _pipeline_input(self, conn: Connection, p: dict[str, Any]) -> dict[str, Any] | None:
        if p["pipeline_id"] is None:
            return None
        t = man_pipeline_specs
        key = (p["pipeline_id"], p["pipeline_version"])
        row = self._fact(conn, t, key, sa.and_(t.c.pipeline_id == key[0], t.c.number == key[1]))
        # The command checked the spec exists; a run recorded some other way must not stall the projection.
        return {
            "id": p["pipeline_id"],
            "name": row.name if row else None,
            "kind": row.kind if row else None,
            "version": p["pipeline_version"],
            "spec": json.loads(row.spec) if row else None,
            "spec_digest": p["spec_digest"],
        }

    def _dataset_inputs(self, conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
        t = man_dataset_versions
        found = {i: self._facts[(t.name, i)] for i in ids if (t.name, i) in self._facts}
        missing = [i for i in ids if i not in found]
        if missing:
            for row in conn.execute(sa.select(t).where(t.c.id.in_(missing))):
                found[row.id] = self._facts[(t.name, row.id)] = row
        fields = ("name", "number", "digest", "size", "format")
        return [{"id": i, **{f: getattr(found[i], f) if i in found else None for f in fields}} for i in ids]

    def _code_input(self, conn: Connection, code_id: str | None) -> dict[str, Any] | None:
        if code_id is None:
            return None
        t = man_code_versions
        row = self._fact(conn, t, code_id, t.c.id == code_id)
        fields = ("repository", "commit", "archive_digest", "entrypoint")
        return {"id": code_id, **{f: getattr(row, f) if row else None for f in fields}}

    @_on(Run.Requested.TOPIC)
    def _run_requested(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        runner = p["mode"] == "runner"
        document = {
            "run_id": e.aggregate_id,
            "name": p["name"],
            "mode": p["mode"],
            "status": RunStatus.at_start(p["mode"]).value,
            "inputs": {
                "pipeline": self._pipeline_input(conn, p),
                "datasets": self._dataset_inputs(conn, list(p["dataset_version_ids"])),
                "code": self._code_input(conn, p["code_version_id"]),
                "params": p["params"],
                "seed": p["seed"],
                "device_requested": p["device"],
            },
            "environment": None,
            "execution": {
                "runner_id": None,
                "host": None,
                "device": None,
                "device_note": None,
                # A client-reported run starts when it is reported; a runner's when it is claimed.
                "started_at": None if runner else e.recorded_at,
                "finished_at": None,
                "error": None,
            },
            "outputs": {"artifacts": [], "metrics": {}},
            "reproduces": p.get("reproduces"),
            "reproductions": [],
            "events": [],
        }
        self._open[e.aggregate_id] = _Open(document, e.notification_id, new=True)

    @_on(Run.Claimed.TOPIC)
    def _run_claimed(self, conn: Connection, e: ProjectedEvent) -> None:
        document = self._document(conn, e.aggregate_id).document
        document["status"] = RunStatus.CLAIMED.value
        document["execution"].update(runner_id=e.payload["runner_id"], host=e.payload["host"], started_at=e.recorded_at)

    @_on(Run.EnvironmentCaptured.TOPIC)
    def _run_environment(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        document = self._document(conn, e.aggregate_id).document
        document["status"] = RunStatus.RUNNING.value
        # The capture as recorded; one recorded without its own digest gets the event's.
        document["environment"] = {"digest": p["environment_digest"], **p["environment"]}
        document["execution"].update(device=p["device"], device_note=p["device_note"])

    @_on(Run.ParamsLogged.TOPIC)
    def _run_params(self, conn: Connection, e: ProjectedEvent) -> None:
        inputs = self._document(conn, e.aggregate_id).document["inputs"]
        inputs["params"] = {**inputs["params"], **e.payload["params"]}

    @_on(Run.MetricsLogged.TOPIC)
    def _run_metrics(self, conn: Connection, e: ProjectedEvent) -> None:
        final = self._document(conn, e.aggregate_id).document["outputs"]["metrics"]
        for point in e.payload["metrics"]:
            # The final value is the one at the highest step; at equal steps, the later one.
            current = final.get(point["key"])
            if current is None or point["step"] >= current["step"]:
                final[point["key"]] = {"value": float(point["value"]), "step": point["step"]}

    @_on(Run.ArtifactRecorded.TOPIC)
    def _run_artifact(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        self._document(conn, e.aggregate_id).document["outputs"]["artifacts"].append(
            {"name": p["name"], "digest": p["digest"], "size": p["size"], "media_type": p["media_type"]}
        )

    @_on(Run.Finished.TOPIC, Run.Abandoned.TOPIC)
    def _run_ended(self, conn: Connection, e: ProjectedEvent) -> None:
        document = self._document(conn, e.aggregate_id).document
        finished = e.topic == Run.Finished.TOPIC
        document["status"] = e.payload["status"] if finished else RunStatus.ABANDONED.value
        document["execution"].update(
            finished_at=e.recorded_at, error=e.payload["error"] if finished else e.payload["reason"]
        )

    @_on(Run.ResourcesRecorded.TOPIC)
    def _run_resources(self, conn: Connection, e: ProjectedEvent) -> None:
        # Only a run that recorded resources has the key, so older documents keep their digests.
        self._document(conn, e.aggregate_id).document["resources"] = e.payload["resources"]

    @_on(Run.ReproductionVerified.TOPIC, Run.ReproductionDiverged.TOPIC)
    def _run_reproduced(self, conn: Connection, e: ProjectedEvent) -> None:
        p = e.payload
        verified = e.topic == Run.ReproductionVerified.TOPIC
        self._document(conn, e.aggregate_id).document["reproductions"].append(
            {
                "run_id": p["reproduction_run_id"],
                "verdict": "verified" if verified else "diverged",
                "method": p["method"] if verified else None,
                "tolerance": float(p["tolerance"]) if verified else None,
            }
        )


Manifests.topics = tuple(sorted(set(_HANDLERS) | RUN_TOPICS))
