"""A typed Python client for the ML Ledger API.

Writes return a :class:`Written` (record id and ledger position); reads accept
``min_position`` so a client reads its own writes. Approvals are signed here,
on the client, with the approver's own key: the service never sees it.

    client = LedgerClient("http://127.0.0.1:8000", api_key)
    run = client.start_run(name="baseline")
    client.log_params(run.id, {"max_depth": 3})
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from domain.approval import approval_statement, sign_statement
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import format_timestamp
from domain.principal import possession_message


class LedgerClientError(Exception):
    """The service answered with an RFC 9457 problem."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.field = problem.get("field")
        super().__init__(f"{status} {problem.get('title', 'Error')}: {problem.get('detail', '')}")


@dataclass(frozen=True)
class Written:
    """What a write recorded."""

    id: str
    position: int


class ChangePending(Exception):
    """A privileged request was proposed, not applied: another admin confirms ``change_id``
    (``LedgerClient.confirm_change``), and only then does it take effect."""

    def __init__(self, change_id: str, position: int) -> None:
        self.change_id = change_id
        self.position = position
        super().__init__(f"proposed as privileged change {change_id}: another admin must confirm it")


class LedgerClient:
    """Talks to one ML Ledger service with one API key."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str = "",
        *,
        http: httpx.Client | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body or raise :class:`LedgerClientError`."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:500]}
            raise LedgerClientError(response.status_code, problem)
        return response.json() if response.content else None

    def _write(self, method: str, path: str, **kwargs: Any) -> tuple[Written, dict[str, Any]]:
        body = self.request(method, path, **kwargs)
        return Written(body["id"], body["position"]), body

    @staticmethod
    def _read_params(min_position: int | None, **params: Any) -> dict[str, Any]:
        out = {k: v for k, v in params.items() if v is not None}
        if min_position:
            out["min_position"] = min_position
        return out

    # -- principals -----------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """Who this client is."""
        result: dict[str, Any] = self.request("GET", "/v1/me")
        return result

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

    def privileged_change(self, change_id: str) -> dict[str, Any]:
        """A proposal: its kind, details, proposer and status (admin)."""
        result: dict[str, Any] = self.request("GET", f"/v1/privileged-changes/{change_id}")
        return result

    def confirm_change(self, change_id: str) -> dict[str, Any]:
        """Confirm another admin's proposal (admin); it takes effect. ``api_key`` holds a key it issued."""
        result: dict[str, Any] = self.request("POST", f"/v1/privileged-changes/{change_id}/confirm")
        return result

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

    # -- lineage --------------------------------------------------------------
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
        import json

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

    def upload_code_archive(self, data: bytes) -> str:
        """Upload a code archive; return its digest (pass it to register_code_version)."""
        body = self.request(
            "PUT", "/v1/code-archives", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        return str(body["digest"])

    def register_code_version(self, repository: str, commit: str, **fields: Any) -> Written:
        """Register a code version."""
        return self._write("POST", "/v1/code-versions", json={"repository": repository, "commit": commit, **fields})[0]

    def add_pipeline_spec(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[int, Written]:
        """Record a pipeline spec version; return its number."""
        written, body = self._write("POST", f"/v1/pipelines/{name}/specs", json={"kind": kind, "spec": spec})
        return int(body["version"]), written

    def start_run(self, **fields: Any) -> Written:
        """Start a client-reported run (or request one for a runner with mode='runner')."""
        return self._write("POST", "/v1/runs", json=fields)[0]

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

    def upload_artifact(self, run_id: str, name: str, data: bytes, media_type: str = "application/octet-stream") -> str:
        """Upload an artifact; return its digest."""
        body = self.request(
            "PUT",
            f"/v1/runs/{run_id}/artifacts/{name}",
            content=data,
            headers={**self.headers, "Content-Type": media_type},
        )
        return str(body["digest"])

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's current state."""
        result: dict[str, Any] = self.request("GET", f"/v1/runs/{run_id}")
        return result

    def wait_for_run(self, run_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict[str, Any]:
        """Poll until the run has ended (succeeded, failed, cancelled or abandoned); return it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            found = self.run(run_id)
            if found["status"] in ("succeeded", "failed", "cancelled", "abandoned"):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {found['status']} after {timeout:.0f} s")
            time.sleep(poll)

    def reproduce(self, run_id: str, params: dict[str, Any] | None = None) -> Written:
        """Request a re-execution of a run; the verdict is recorded on the original run."""
        return self._write("POST", f"/v1/runs/{run_id}/reproduce", json={"params": params or {}})[0]

    def manifest(self, run_id: str, min_position: int | None = None) -> dict[str, Any]:
        """The reproducibility manifest of a run."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/runs/{run_id}/manifest", params=self._read_params(min_position)
        )
        return result

    def provenance(self, run_id: str) -> dict[str, Any]:
        """The run's in-toto/SLSA provenance in a DSSE envelope signed by the ledger key."""
        result: dict[str, Any] = self.request("GET", f"/v1/runs/{run_id}/provenance")
        return result

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

    def model_version(self, name: str, version: int) -> dict[str, Any]:
        """A model version with its approval state."""
        result: dict[str, Any] = self.request("GET", f"/v1/models/{name}/versions/{version}")
        return result

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
            model_version_id=found["id"],
            model_name=name,
            version=version,
            artifact_digest=found["artifact_digest"],
            run_digest=found["run_digest"],
            decision=decision,
            reason=reason,
            approver=approver_id or self.me()["id"],
            signed_at=format_timestamp(datetime.now(UTC)),
        )
        signature = sign_statement(statement, signer.sign)
        return self._write(
            "POST",
            f"/v1/models/{name}/versions/{version}/approvals",
            json={"key_id": key_id, "statement": statement, "signature": signature},
        )[0]

    def deploy(
        self, name: str, action: str, version: int | None = None, share: float | None = None, reason: str = ""
    ) -> Written:
        """Change the deployment (champion, challenger, canary, rollback, stop, resume, retire)."""
        return self._write(
            "POST",
            f"/v1/models/{name}/deployment",
            json={"action": action, "version": version, "share": share, "reason": reason},
        )[0]

    def deployment(self, name: str) -> dict[str, Any]:
        """What serves a model now."""
        result: dict[str, Any] = self.request("GET", f"/v1/models/{name}/deployment")
        return result

    # -- audit ----------------------------------------------------------------
    def lineage(self, name: str, version: int, min_position: int | None = None) -> dict[str, Any]:
        """The whole chain behind a model version."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/models/{name}/versions/{version}/lineage", params=self._read_params(min_position)
        )
        return result

    def champion_at(self, name: str, at: str, min_position: int | None = None) -> dict[str, Any]:
        """Which version served as champion at moment ``at`` (RFC 3339)."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/models/{name}/champion", params=self._read_params(min_position, at=at)
        )
        return result

    def audit_events(self, min_position: int | None = None, **filters: Any) -> dict[str, Any]:
        """One page of the audit trail (filters: aggregate_id, type, actor, model, since, until, after, limit)."""
        result: dict[str, Any] = self.request(
            "GET", "/v1/audit/events", params=self._read_params(min_position, **filters)
        )
        return result

    # -- predictions ------------------------------------------------------------
    def predict(
        self, name: str, features: dict[str, Any], *, request_id: str | None = None, subject_id: str | None = None
    ) -> dict[str, Any]:
        """One prediction from the deployed model (returned after its event is durable)."""
        body: dict[str, Any] = {"input": features}
        if request_id is not None:
            body["request_id"] = request_id
        if subject_id is not None:
            body["subject_id"] = subject_id
        result: dict[str, Any] = self.request("POST", f"/v1/models/{name}/predict", json=body)
        return result

    def predict_batch(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Many predictions in one request; each record is {"input": {...}, "request_id"?, "subject_id"?}."""
        result: dict[str, Any] = self.request("POST", f"/v1/models/{name}/predict:batch", json={"records": records})
        return result

    def decision(self, reference: str, min_position: int | None = None, model: str | None = None) -> dict[str, Any]:
        """A decision reconstructed, by prediction id or request id."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/predictions/{reference}", params=self._read_params(min_position, model=model)
        )
        return result

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

    def monitoring(self, name: str, min_position: int | None = None, window: int | None = None) -> dict[str, Any]:
        """Drift alerts, live accuracy (per ``window`` outcomes) and serving figures of a model."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/models/{name}/monitoring", params=self._read_params(min_position, window=window)
        )
        return result

    def check_drift(self, name: str, window: int | None = None, min_position: int | None = None) -> dict[str, Any]:
        """Compare the latest window of inputs (up to ``min_position`` at least) with the training data now."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/v1/models/{name}/monitoring/check",
            json={} if window is None else {"window": window},
            params=self._read_params(min_position),
        )
        return result

    def report(self, name: str, version: int, kind: str, min_position: int | None = None) -> dict[str, Any]:
        """A version's ``explanations`` or ``fairness`` report."""
        result: dict[str, Any] = self.request(
            "GET", f"/v1/models/{name}/versions/{version}/{kind}", params=self._read_params(min_position)
        )
        return result

    # -- exports ----------------------------------------------------------------
    def create_export(self, model: str, **fields: Any) -> dict[str, Any]:
        """Build a regulator's bundle of ``model`` (fields: from, to, predictions, sample_size, share_with)."""
        result: dict[str, Any] = self.request("POST", "/v1/exports", json={"model": model, **fields})
        return result

    def exports(self) -> list[dict[str, Any]]:
        """The bundles this caller may see."""
        result: list[dict[str, Any]] = self.request("GET", "/v1/exports")
        return result

    def download_export(self, export_id: str) -> bytes:
        """The bundle's bytes (the download is recorded)."""
        response = self.http.get(f"/v1/exports/{export_id}/bundle", headers=self.headers)
        if response.status_code >= 400:
            raise LedgerClientError(response.status_code, response.json())
        return response.content


class MetricLogger:
    """Buffers one run's metric points on the client and records them in batches.

    ``log`` costs no request; ``flush`` (every ``flush_every`` points, and on
    leaving the ``with`` block) records the buffered points with one
    ``metrics:batch`` call, one signed event. Points are durable once flushed:
    :meth:`flush` returns the ledger position, as every write does.
    """

    def __init__(self, client: LedgerClient, run_id: str, flush_every: int = 1000) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be at least 1")
        self.client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self._points: list[dict[str, Any]] = []

    def log(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one point; flush when the buffer is full."""
        self._points.append({"key": key, "value": value, "step": step})
        if len(self._points) >= self.flush_every:
            self.flush()

    def flush(self) -> Written | None:
        """Record the buffered points (None when there were none)."""
        if not self._points:
            return None
        points, self._points = self._points, []
        return self.client.log_metrics(self.run_id, points)

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.flush()
