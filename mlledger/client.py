"""A typed Python client for the ML Ledger API.

    client = LedgerClient()              # MLLEDGER_URL and MLLEDGER_API_KEY from the environment
    with client.start_run(name="baseline") as run:
        run.log_params({"max_depth": 3})
        run.log_metric("auc", 0.91)      # ends succeeded, or failed if the block raises

Writes return a :class:`Written` (record id and ledger position); the client
remembers the highest position it wrote and reads wait for it, so a client
always reads its own writes. Reads return frozen dataclasses (``mlledger.results``).
Approvals are signed here, on the client, with the approver's own key: the
service never sees it. :meth:`LedgerClient.verify_inclusion` checks that a
write is in the transparency log, with nothing but the ledger's public key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.approval import approval_statement, sign_statement
from domain.integrity.keys import Signer, load_public_key_pem, public_key_pem
from domain.integrity.sealing import format_timestamp
from domain.principal import possession_message
from mlledger.errors import ChangePending, InclusionCheckFailed, LedgerClientError
from mlledger.proofs import check_inclusion
from mlledger.results import (
    AuditPage,
    ChampionAt,
    ChangeInfo,
    ChangeOutcome,
    DatasetVersionInfo,
    Decision,
    DeploymentInfo,
    DriftCheckResult,
    ExportCreated,
    ExportInfo,
    InclusionVerified,
    Lineage,
    Manifest,
    Me,
    MetricPoint,
    ModelInfo,
    ModelVersionInfo,
    Monitoring,
    Page,
    Prediction,
    PredictionBatch,
    Provenance,
    Report,
    RunComparison,
    RunInfo,
    Written,
)
from mlledger.tracking import ActiveRun, MetricLogger
from mlledger.transport import Transport, check

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV = "MLLEDGER_URL", "MLLEDGER_API_KEY"
NEXT_CURSOR_HEADER = "X-Next-Cursor"
T = TypeVar("T")

__all__ = ["ActiveRun", "ChangePending", "LedgerClient", "LedgerClientError", "MetricLogger", "Written"]


class LedgerClient:
    """Talks to one ML Ledger service with one API key.

    ``base_url`` and ``api_key`` default to ``MLLEDGER_URL`` and
    ``MLLEDGER_API_KEY``. ``retries`` bounds how often a request is sent again
    (see ``mlledger.transport``); ``ledger_public_key`` (PEM) pins the key that
    :meth:`verify_inclusion` trusts.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.25,
        ledger_public_key: str | bytes | Ed25519PublicKey | None = None,
    ) -> None:
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
        self.base_url = url
        self.http = http or httpx.Client(base_url=url, timeout=timeout)
        self.transport = Transport(self.http, key, retries=retries, backoff=backoff)
        self.headers = self.transport.headers
        self.ledger_key = (
            load_public_key_pem(ledger_public_key) if isinstance(ledger_public_key, str | bytes) else ledger_public_key
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------
    @property
    def position(self) -> int:
        """The highest ledger position this client wrote (reads wait for it)."""
        return self.transport.position

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        """Send a request; return the JSON body or raise :class:`LedgerClientError`."""
        return self.transport.json(method, path, idempotent=idempotent, **kwargs)

    def _write(self, method: str, path: str, **kwargs: Any) -> tuple[Written, dict[str, Any]]:
        body = self.request(method, path, **kwargs)
        return Written(body["id"], body["position"]), body

    @staticmethod
    def _read_params(min_position: int | None, **params: Any) -> dict[str, Any]:
        out = {k: v for k, v in params.items() if v is not None}
        if min_position:
            out["min_position"] = min_position
        return out

    def _page(
        self, path: str, build: Callable[[dict[str, Any]], T], limit: int, cursor: str | None, **params: Any
    ) -> Page[T]:
        query = self._read_params(None, limit=limit, cursor=cursor, **params)
        response = self.transport.send("GET", path, params=query)
        check(response)
        return Page([build(item) for item in response.json()], response.headers.get(NEXT_CURSOR_HEADER))

    def _walk(self, path: str, build: Callable[[dict[str, Any]], T], page_size: int, **params: Any) -> Iterator[T]:
        """Every item of a list, page after page."""
        cursor: str | None = None
        while True:
            page = self._page(path, build, page_size, cursor, **params)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- principals -----------------------------------------------------------
    def me(self) -> Me:
        """Who this client is."""
        return Me.from_json(self.request("GET", "/v1/me"))

    def create_principal(self, name: str, roles: list[str], kind: str = "user") -> Written:
        """Register a principal (admin)."""
        return self._write("POST", "/v1/principals", json={"name": name, "kind": kind, "roles": roles})[0]

    def _privileged(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self.request(method, path, **kwargs)
        if body.get("pending"):
            raise ChangePending(str(body["id"]), int(body["position"]))
        return body

    def grant_role(self, principal_id: str, role: str, reason: str = "") -> Written:
        """Grant a role (admin). ``admin`` and ``approver`` raise :class:`ChangePending` (outside the
        bootstrap): the grant waits for another admin's :meth:`confirm_change`."""
        body = self._privileged("POST", f"/v1/principals/{principal_id}/roles", json={"role": role, "reason": reason})
        return Written(body["id"], body["position"])

    def issue_api_key(self, principal_id: str, label: str = "", reason: str = "") -> str:
        """Issue an API key (admin); returns the key, shown once. For someone else (outside the bootstrap)
        it raises :class:`ChangePending`: the admin who confirms receives the key."""
        body = self._privileged(
            "POST", f"/v1/principals/{principal_id}/api-keys", json={"label": label, "reason": reason}
        )
        return str(body["api_key"])

    def set_policy(self, name: str, policy: dict[str, Any]) -> Written:
        """Set a model's approval policy (admin); a weaker one raises :class:`ChangePending`."""
        body = self._privileged("PUT", f"/v1/models/{name}/policy", json=policy)
        return Written(body["id"], body["position"])

    def privileged_change(self, change_id: str) -> ChangeInfo:
        """A proposal: its kind, details, proposer and status (admin)."""
        return ChangeInfo.from_json(self.request("GET", f"/v1/privileged-changes/{change_id}"))

    def confirm_change(self, change_id: str) -> ChangeOutcome:
        """Confirm another admin's proposal (admin); it takes effect. ``api_key`` holds a key it issued."""
        return ChangeOutcome.from_json(self.request("POST", f"/v1/privileged-changes/{change_id}/confirm"))

    def withdraw_change(self, change_id: str, reason: str) -> Written:
        """Withdraw a pending proposal (admin)."""
        return self._write("POST", f"/v1/privileged-changes/{change_id}/withdraw", json={"reason": reason})[0]

    def register_signing_key(self, principal_id: str, signer: Signer) -> str:
        """Register the public half of ``signer`` as your own key, proving you hold it; return its key id.

        ``principal_id`` is yours: the private key signs a statement naming it
        and the key id, locally; only the public key and that proof are sent.
        """
        proof = signer.sign(possession_message(principal_id, signer.key_id))
        body = self.request(
            "POST",
            f"/v1/principals/{principal_id}/signing-keys",
            json={"public_key_pem": public_key_pem(signer.public_key), "proof": proof},
        )
        return str(body["key_id"])

    def revoke_signing_key(self, principal_id: str, key_id: str, reason: str) -> Written:
        """Revoke a signing key (your own, or anyone's as an admin): what it signs is refused from then on."""
        return self._write(
            "POST", f"/v1/principals/{principal_id}/signing-keys/{key_id}/revoke", json={"reason": reason}
        )[0]

    # -- datasets and code ----------------------------------------------------
    def upload_dataset(
        self,
        name: str,
        data: bytes | BinaryIO | Path,
        *,
        format: str = "csv",
        datasheet: dict[str, Any] | None = None,
        source: str = "upload",
        filename: str = "data",
    ) -> Written:
        """Upload a new dataset version (streamed)."""
        handle: Any = data.open("rb") if isinstance(data, Path) else data
        try:
            meta = json.dumps({"format": format, "datasheet": datasheet or {}, "source": source})
            return self._write(
                "POST", f"/v1/datasets/{name}/versions", files={"file": (filename, handle)}, data={"metadata": meta}
            )[0]
        finally:
            if isinstance(data, Path):
                handle.close()

    def register_dataset(self, name: str, uri: str, digest: str, **fields: Any) -> Written:
        """Register a dataset file by URI and digest."""
        return self._write(
            "POST", f"/v1/datasets/{name}/versions:register", json={"uri": uri, "digest": digest, **fields}
        )[0]

    def dataset_version(self, dataset_id: str) -> DatasetVersionInfo:
        """A dataset version."""
        return DatasetVersionInfo.from_json(self.request("GET", f"/v1/dataset-versions/{dataset_id}"))

    def dataset_versions(self, name: str, page_size: int = 100) -> Iterator[DatasetVersionInfo]:
        """Every version of a dataset, oldest first (fetched page by page)."""
        return self._walk(f"/v1/datasets/{name}/versions", DatasetVersionInfo.from_json, page_size)

    def set_dataset_tags(self, dataset_id: str, tags: dict[str, str]) -> Written:
        """Set tags of a dataset version."""
        return self._write("POST", f"/v1/dataset-versions/{dataset_id}/tags", json={"tags": tags}, idempotent=True)[0]

    def set_dataset_description(self, dataset_id: str, description: str) -> Written:
        """Set the description of a dataset version."""
        return self._write(
            "PUT", f"/v1/dataset-versions/{dataset_id}/description", json={"description": description}, idempotent=True
        )[0]

    def upload_code_archive(self, data: bytes) -> str:
        """Upload a code archive; return its digest (pass it to register_code_version)."""
        body = self.request(
            "PUT",
            "/v1/code-archives",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            idempotent=True,  # content-addressed: the same bytes land in the same place
        )
        return str(body["digest"])

    def register_code_version(self, repository: str, commit: str, **fields: Any) -> Written:
        """Register a code version."""
        return self._write("POST", "/v1/code-versions", json={"repository": repository, "commit": commit, **fields})[0]

    def add_pipeline_spec(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[int, Written]:
        """Record a pipeline spec version; return its number."""
        written, body = self._write("POST", f"/v1/pipelines/{name}/specs", json={"kind": kind, "spec": spec})
        return int(body["version"]), written

    # -- runs -----------------------------------------------------------------
    def start_run(self, **fields: Any) -> ActiveRun:
        """Start a client-reported run (or request one for a runner with mode='runner').

        The result has the run's ``id`` and ``position``; as a ``with`` block it
        ends the run: succeeded, or failed when an exception escapes.
        """
        return ActiveRun(self, self._write("POST", "/v1/runs", json=fields)[0])

    def log_params(self, run_id: str, params: dict[str, Any]) -> Written:
        """Record parameters."""
        return self._write("POST", f"/v1/runs/{run_id}/params", json={"params": params})[0]

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> Written:
        """Record one metric point."""
        return self._write("POST", f"/v1/runs/{run_id}/metrics", json={"key": key, "value": value, "step": step})[0]

    def metric_logger(self, run_id: str, flush_every: int = 1000) -> MetricLogger:
        """A buffer for many single metric points: one HTTP call and one signed event per ``flush_every``
        points, and a flush when the ``with`` block ends (use it for training loops)."""
        return MetricLogger(self, run_id, flush_every)

    def log_metrics(self, run_id: str, metrics: list[dict[str, Any]]) -> Written:
        """Record a batch of metric points."""
        return self._write("POST", f"/v1/runs/{run_id}/metrics:batch", json={"metrics": metrics})[0]

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> Written:
        """Set tags of a run (also after it ended)."""
        return self._write("POST", f"/v1/runs/{run_id}/tags", json={"tags": tags}, idempotent=True)[0]

    def set_run_description(self, run_id: str, description: str) -> Written:
        """Set the description of a run."""
        return self._write("PUT", f"/v1/runs/{run_id}/description", json={"description": description}, idempotent=True)[
            0
        ]

    def upload_artifact(self, run_id: str, name: str, data: bytes, media_type: str = "application/octet-stream") -> str:
        """Upload an artifact; return its digest."""
        body = self.request(
            "PUT", f"/v1/runs/{run_id}/artifacts/{name}", content=data, headers={"Content-Type": media_type}
        )
        return str(body["digest"])

    def download_artifact(self, run_id: str, name: str, destination: Path | None = None) -> bytes | Path:
        """An artifact's bytes (or, with ``destination``, the file written there), checked against its digest."""
        response = self.transport.send("GET", f"/v1/runs/{run_id}/artifacts/{name}")
        check(response)
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if digest != response.headers.get("X-Content-Digest"):
            raise LedgerClientError(502, {"title": "Bad artifact", "detail": f"{name} arrived with digest {digest}"})
        if destination is None:
            return response.content
        destination.write_bytes(response.content)
        return destination

    def run(self, run_id: str) -> RunInfo:
        """A run's current state."""
        return RunInfo.from_json(self.request("GET", f"/v1/runs/{run_id}"))

    def runs(
        self, *, filter: str | None = None, status: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[RunInfo]:
        """One page of runs, newest first; ``filter`` searches params, final metrics and tags
        (``"metrics.auc > 0.8 AND params.max_depth = '3' AND tags.team = 'risk'"``)."""
        return self._page("/v1/runs", RunInfo.from_json, limit, cursor, filter=filter, status=status)

    def search_runs(
        self, filter: str | None = None, *, status: str | None = None, page_size: int = 100
    ) -> Iterator[RunInfo]:
        """Every run that matches ``filter``, newest first (fetched page by page)."""
        return self._walk("/v1/runs", RunInfo.from_json, page_size, filter=filter, status=status)

    def compare_runs(self, *run_ids: str) -> RunComparison:
        """Two to ten runs side by side: params, final metrics, tags, dataset and code versions."""
        return RunComparison.from_json(self.request("GET", "/v1/runs:compare", params={"run": list(run_ids)}))

    def metric_history(self, run_id: str, key: str, page_size: int = 1000) -> Iterator[MetricPoint]:
        """Every point of one metric of a run, by step."""
        return self._walk(f"/v1/runs/{run_id}/metrics/{key}", MetricPoint.from_json, page_size)

    def wait_for_run(self, run_id: str, timeout: float = 600.0, poll: float = 0.25) -> RunInfo:
        """Poll until the run has ended (succeeded, failed, cancelled or abandoned); return it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.run(run_id)
            if found.finished:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {found.status} after {timeout:.0f} s")
            time.sleep(poll)

    def reproduce(self, run_id: str, params: dict[str, Any] | None = None) -> Written:
        """Request a re-execution of a run; the verdict is recorded on the original run."""
        return self._write("POST", f"/v1/runs/{run_id}/reproduce", json={"params": params or {}})[0]

    def manifest(self, run_id: str, min_position: int | None = None) -> Manifest:
        """The reproducibility manifest of a run."""
        return Manifest.from_json(
            self.request("GET", f"/v1/runs/{run_id}/manifest", params=self._read_params(min_position))
        )

    def provenance(self, run_id: str) -> Provenance:
        """The run's in-toto/SLSA provenance in a DSSE envelope signed by the ledger key."""
        return Provenance.from_json(self.request("GET", f"/v1/runs/{run_id}/provenance"))

    def finish_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> Written:
        """End a run."""
        return self._write("POST", f"/v1/runs/{run_id}/finish", json={"status": status, "error": error})[0]

    # -- models ---------------------------------------------------------------
    def register_model_version(
        self,
        name: str,
        run_id: str,
        artifact_name: str,
        input_schema: list[dict[str, Any]] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> tuple[int, Written]:
        """Register the next version of a model; return its number."""
        payload: dict[str, Any] = {"run_id": run_id, "artifact_name": artifact_name, "input_schema": input_schema or []}
        if policy is not None:
            payload["policy"] = policy
        written, body = self._write("POST", f"/v1/models/{name}/versions", json=payload)
        return int(body["version"]), written

    def models(self, page_size: int = 100) -> Iterator[ModelInfo]:
        """Every model, by name."""
        return self._walk("/v1/models", ModelInfo.from_json, page_size)

    def model_versions(self, name: str, page_size: int = 100) -> Iterator[ModelVersionInfo]:
        """Every version of a model, oldest first, with approval state, tags and description."""
        return self._walk(f"/v1/models/{name}/versions", ModelVersionInfo.from_json, page_size)

    def model_version(self, name: str, version: int) -> ModelVersionInfo:
        """A model version with its approval state."""
        return ModelVersionInfo.from_json(self.request("GET", f"/v1/models/{name}/versions/{version}"))

    def set_model_version_tags(self, name: str, version: int, tags: dict[str, str]) -> Written:
        """Set tags of a model version (they describe it; they never approve or deploy it)."""
        return self._write("POST", f"/v1/models/{name}/versions/{version}/tags", json={"tags": tags}, idempotent=True)[
            0
        ]

    def set_model_version_description(self, name: str, version: int, description: str) -> Written:
        """Set the description of a model version."""
        return self._write(
            "PUT",
            f"/v1/models/{name}/versions/{version}/description",
            json={"description": description},
            idempotent=True,
        )[0]

    def decide(
        self,
        name: str,
        version: int,
        signer: Signer,
        key_id: str,
        decision: str,
        reason: str,
        approver_id: str | None = None,
    ) -> Written:
        """Build the statement, sign it here with ``signer``, and record the decision."""
        found = self.model_version(name, version)
        statement = approval_statement(
            model_version_id=found.id,
            model_name=name,
            version=version,
            artifact_digest=found.artifact_digest,
            run_digest=found.run_digest,
            decision=decision,
            reason=reason,
            approver=approver_id or self.me().id,
            signed_at=format_timestamp(datetime.now(UTC)),
        )
        signature = sign_statement(statement, signer.sign)
        return self._write(
            "POST",
            f"/v1/models/{name}/versions/{version}/approvals",
            json={"key_id": key_id, "statement": statement, "signature": signature},
        )[0]

    def approve(self, name: str, version: int, signer: Signer, reason: str) -> Written:
        """Approve a version, signed here with ``signer`` (a key registered as yours)."""
        return self.decide(name, version, signer, signer.key_id, "approve", reason)

    def reject(self, name: str, version: int, signer: Signer, reason: str) -> Written:
        """Reject a version, signed here with ``signer`` (a key registered as yours)."""
        return self.decide(name, version, signer, signer.key_id, "reject", reason)

    def deploy(
        self, name: str, action: str, version: int | None = None, share: float | None = None, reason: str = ""
    ) -> Written:
        """Change the deployment (champion, challenger, canary, rollback, stop, resume, retire)."""
        return self._write(
            "POST",
            f"/v1/models/{name}/deployment",
            json={"action": action, "version": version, "share": share, "reason": reason},
        )[0]

    def deployment(self, name: str) -> DeploymentInfo:
        """What serves a model now."""
        return DeploymentInfo.from_json(self.request("GET", f"/v1/models/{name}/deployment"))

    # -- audit ----------------------------------------------------------------
    def lineage(self, name: str, version: int, min_position: int | None = None) -> Lineage:
        """The whole chain behind a model version."""
        return Lineage.from_json(
            self.request("GET", f"/v1/models/{name}/versions/{version}/lineage", params=self._read_params(min_position))
        )

    def champion_at(self, name: str, at: str, min_position: int | None = None) -> ChampionAt:
        """Which version served as champion at moment ``at`` (RFC 3339)."""
        return ChampionAt.from_json(
            self.request("GET", f"/v1/models/{name}/champion", params=self._read_params(min_position, at=at))
        )

    def audit_events(self, min_position: int | None = None, **filters: Any) -> AuditPage:
        """One page of the audit trail, oldest first (filters: aggregate_id, type, actor, model, since, until,
        limit; ``cursor``: the previous page's ``next_after``)."""
        return AuditPage.from_json(
            self.request("GET", "/v1/audit/events", params=self._read_params(min_position, **filters))
        )

    # -- the transparency log ---------------------------------------------------
    def _trusted_key(self, key_id: str) -> Ed25519PublicKey:
        if self.ledger_key is not None:
            return self.ledger_key
        for key in self.request("GET", "/v1/ledger/keys"):
            if key["key_id"] == key_id:
                return load_public_key_pem(key["public_key_pem"])
        raise InclusionCheckFailed(f"the ledger publishes no key {key_id}")

    def verify_inclusion(self, written: Written | ActiveRun, timeout: float = 30.0) -> InclusionVerified:
        """Check that a write is in the transparency log under a checkpoint signed by the ledger key.

        Waits (up to ``timeout``) for a checkpoint that covers the write. The key
        is the ``ledger_public_key`` this client was given; without one, the key
        the ledger publishes now (trust on first use: pin the key to rule out a
        ledger that lies about its own key).
        """
        if isinstance(written, ActiveRun):
            written = written.written
        receipt = self.request("GET", f"/v1/receipts/{written.position}")
        key = self._trusted_key(str(receipt.get("key_id")))
        deadline = time.monotonic() + timeout
        while True:
            try:
                proof = self.request("GET", "/v1/ledger/proofs/inclusion", params={"notification_id": written.position})
            except LedgerClientError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                proof = None
            if proof is not None and proof.get("checkpoint") is not None:
                return check_inclusion(written, receipt, proof, key)
            if time.monotonic() > deadline:
                raise InclusionCheckFailed(f"no signed checkpoint covered position {written.position} in {timeout} s")
            time.sleep(0.2)

    # -- predictions ------------------------------------------------------------
    def predict(
        self, name: str, features: dict[str, Any], *, request_id: str | None = None, subject_id: str | None = None
    ) -> Prediction:
        """One prediction from the deployed model (returned after its event is durable); with a
        ``request_id`` it is retried safely: the service records one prediction per request id, and a
        retry whose first try was recorded gets that recorded answer."""
        body: dict[str, Any] = {"input": features}
        if request_id is not None:
            body["request_id"] = request_id
        if subject_id is not None:
            body["subject_id"] = subject_id
        return Prediction.from_json(
            self.request("POST", f"/v1/models/{name}/predict", json=body, idempotent=request_id is not None)
        )

    def predict_batch(self, name: str, records: list[dict[str, Any]]) -> PredictionBatch:
        """Many predictions in one request; each record is {"input": {...}, "request_id"?, "subject_id"?}.

        When every record has a ``request_id`` the batch is retried safely, as :meth:`predict` is: a
        retry whose first try was recorded gets the recorded answers."""
        idempotent = bool(records) and all(isinstance(r, dict) and r.get("request_id") for r in records)
        return PredictionBatch.from_json(
            self.request("POST", f"/v1/models/{name}/predict:batch", json={"records": records}, idempotent=idempotent)
        )

    def decision(self, reference: str, min_position: int | None = None, model: str | None = None) -> Decision:
        """A decision reconstructed, by prediction id or request id."""
        return Decision.from_json(
            self.request("GET", f"/v1/predictions/{reference}", params=self._read_params(min_position, model=model))
        )

    def record_outcome(self, prediction_id: str, outcome: Any) -> Written:
        """The true outcome of a prediction."""
        return self._write("POST", f"/v1/predictions/{prediction_id}/outcome", json={"outcome": outcome})[0]

    def override(self, prediction_id: str, decision: dict[str, Any], reason: str) -> Written:
        """A person's decision replacing the model's."""
        return self._write(
            "POST", f"/v1/predictions/{prediction_id}/override", json={"decision": decision, "reason": reason}
        )[0]

    def erase_subject(self, subject_id: str, reason: str) -> Written:
        """Destroy a data subject's key: their inputs become unreadable."""
        return self._write("POST", f"/v1/subjects/{subject_id}/erase", json={"reason": reason})[0]

    def monitoring(self, name: str, min_position: int | None = None, window: int | None = None) -> Monitoring:
        """Drift alerts, live accuracy (per ``window`` outcomes) and serving figures of a model."""
        return Monitoring.from_json(
            self.request("GET", f"/v1/models/{name}/monitoring", params=self._read_params(min_position, window=window))
        )

    def check_drift(self, name: str, window: int | None = None, min_position: int | None = None) -> DriftCheckResult:
        """Compare the latest window of inputs (up to ``min_position`` at least) with the training data now."""
        return DriftCheckResult.from_json(
            self.request(
                "POST",
                f"/v1/models/{name}/monitoring/check",
                json={} if window is None else {"window": window},
                params=self._read_params(min_position),
            )
        )

    def report(self, name: str, version: int, kind: str, min_position: int | None = None) -> Report:
        """A version's ``explanations`` or ``fairness`` report."""
        return Report.from_json(
            self.request("GET", f"/v1/models/{name}/versions/{version}/{kind}", params=self._read_params(min_position))
        )

    # -- exports ----------------------------------------------------------------
    def create_export(self, model: str, **fields: Any) -> ExportCreated:
        """Build a regulator's bundle of ``model`` (fields: from, to, predictions, sample_size, share_with)."""
        return ExportCreated.from_json(self.request("POST", "/v1/exports", json={"model": model, **fields}))

    def exports(self, page_size: int = 100) -> list[ExportInfo]:
        """Every bundle this caller may see, oldest first."""
        return list(self._walk("/v1/exports", ExportInfo.from_json, page_size))

    def download_export(self, export_id: str) -> bytes:
        """The bundle's bytes (the download is recorded)."""
        response = self.transport.send("GET", f"/v1/exports/{export_id}/bundle")
        check(response)
        return response.content
