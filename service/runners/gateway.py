"""How a runner reaches the ledger: over HTTP as a ``runner`` principal, or in the service's own process.

A runner never records anything itself. It asks the ledger service, through a
gateway, for requested runs, claims, inputs and uploads, and hands in a signed
execution statement. :class:`HttpGateway` is what a runner outside the service
uses: an API key with the ``runner`` role and the runner's own Ed25519 key, no
ledger key and no database credentials. :class:`InProcessGateway` serves the
runner embedded in ``mlledger serve`` (the embedded default): the service
already holds the ledger key, so its statements are signed with it.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from domain.errors import LedgerError, RunAlreadyClaimed, VersionConflict
from domain.integrity.keys import SigningKey, public_key_pem
from domain.run import Run
from service.application.runner_desk import Claimant
from service.bootstrap import Services
from service.runners.transfer import LedgerUnavailable, RunLedger, file_digest, media_type_of
from service.runners.work import Input, Output, WorkOrder

log = logging.getLogger(__name__)
RUN_TOKEN_HEADER = "X-Run-Token"  # noqa: S105 - a header name, not a secret
CHUNK = 1024 * 1024
REGISTER_TRIES = 10


class LedgerRefused(LedgerError):
    """The ledger refused a runner's request (a 4xx problem); ``status`` is the HTTP status."""

    title = "Refused by the ledger"

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Gateway(Protocol):
    """What a runner may ask of the ledger."""

    principal_id: str
    signer: SigningKey

    def requested(self) -> list[dict[str, Any]]:
        """Newly requested runs (``run_id``, ``device``, ``seed``) since the last call."""
        ...

    def claim(self, run_id: str, claim: dict[str, Any]) -> WorkOrder | None:
        """Claim a run; None when another runner holds it."""
        ...

    def claim_first(self, run_ids: list[str], claim: dict[str, Any]) -> tuple[WorkOrder | None, list[str]]:
        """Claim the first of ``run_ids`` still awaiting a runner (the environment's seed becomes that
        run's); its work order (None when none could be claimed) and the candidates passed over."""
        ...

    def attach(self, runner_id: str, backend: str) -> list[WorkOrder]:
        """Take over runs of ``backend`` whose runner went silent."""
        ...

    def fetch(self, order: WorkOrder, item: Input, cache: Path) -> Path:
        """A local file with the input's bytes, checked against its digest."""
        ...

    def upload(self, order: WorkOrder, path: Path) -> Output:
        """Store an output file of the run; return it by digest."""
        ...

    def upload_all(self, order: WorkOrder, paths: list[Path]) -> list[Output]:
        """Store several output files of the run (in one request where that is possible); return them by digest."""
        ...

    def progress(self, order: WorkOrder, points: list[dict[str, Any]]) -> None:
        """Record progress metric points."""
        ...

    def heartbeat(self, runner_id: str, run_ids: list[str]) -> list[str]:
        """Sign of life; returns the runs that ended elsewhere."""
        ...

    def sweep(self) -> list[str]:
        """Mark silent runs abandoned; returns their ids."""
        ...

    def record(
        self,
        order: WorkOrder,
        statement: dict[str, Any],
        signature: str,
        metrics: list[dict[str, Any]],
        node_environment: dict[str, Any] | None,
    ) -> None:
        """Hand in the signed execution statement."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class InProcessGateway:
    """The gateway of the runner embedded in the service: the desk, called directly."""

    def __init__(self, services: Services, actor: str) -> None:
        self.services = services
        self.desk = services.desk
        self.signer = services.signer
        self.principal_id = "system:ledger"
        self.claimant = Claimant(None, actor)
        self._cursor = 0

    def requested(self) -> list[dict[str, Any]]:
        """Newly requested runs since the last call."""
        runs, self._cursor = self.desk.requested(self._cursor, 500)
        return runs

    def claim(self, run_id: str, claim: dict[str, Any]) -> WorkOrder | None:
        """Claim a run; None when another runner holds it."""
        environment = {**claim["environment"], "backend": claim["backend"]}
        try:
            order = self.desk.claim(
                self.claimant,
                run_id,
                claim["runner_id"],
                claim["host"],
                environment,
                claim["device"],
                claim["device_note"],
            )
        except (RunAlreadyClaimed, VersionConflict):
            return None
        return WorkOrder.from_json(order)

    def claim_first(self, run_ids: list[str], claim: dict[str, Any]) -> tuple[WorkOrder | None, list[str]]:
        """Claim the first of ``run_ids`` still awaiting a runner; its work order and the candidates passed over."""
        environment = {**claim["environment"], "backend": claim["backend"]}
        order, passed = self.desk.claim_first(
            self.claimant,
            run_ids,
            claim["runner_id"],
            claim["host"],
            environment,
            claim["device"],
            claim["device_note"],
        )
        return (None if order is None else WorkOrder.from_json(order)), passed

    def attach(self, runner_id: str, backend: str) -> list[WorkOrder]:
        """Take over runs of ``backend`` whose runner went silent."""
        return [WorkOrder.from_json(order) for order in self.desk.attach(self.claimant, runner_id, backend)]

    def fetch(self, order: WorkOrder, item: Input, cache: Path) -> Path:
        """The stored file itself, checked against its digest (same machine, no copy)."""
        run: Run = self.services.ledger.get(order.run_id, Run)
        return self.desk.input_path(run, item.digest)

    def upload(self, order: WorkOrder, path: Path) -> Output:
        """Put an output file in the blob store."""
        with path.open("rb") as handle:
            blob = self.services.blobs.put_chunks(iter(lambda: handle.read(CHUNK), b""), max_bytes=2**40)
        return Output(path.name, blob.digest, blob.size, media_type_of(path))

    def upload_all(self, order: WorkOrder, paths: list[Path]) -> list[Output]:
        """Put several output files in the blob store."""
        return [self.upload(order, path) for path in paths]

    def progress(self, order: WorkOrder, points: list[dict[str, Any]]) -> None:
        """Record progress metric points."""
        self.services.ledger.log_metrics(order.run_id, points, actor=self.claimant.actor)

    def heartbeat(self, runner_id: str, run_ids: list[str]) -> list[str]:
        """Sign of life; returns the runs that ended elsewhere."""
        return self.desk.heartbeat(runner_id, run_ids)

    def sweep(self) -> list[str]:
        """Mark silent runs abandoned."""
        return self.desk.sweep(self.claimant.actor)

    def record(
        self,
        order: WorkOrder,
        statement: dict[str, Any],
        signature: str,
        metrics: list[dict[str, Any]],
        node_environment: dict[str, Any] | None,
    ) -> None:
        """Record the statement, checked against the ledger's own key."""
        self.desk.record(
            self.claimant,
            order.run_id,
            statement,
            signature,
            metrics,
            node_environment,
            signer_pem=public_key_pem(self.signer.public_key),
        )

    def close(self) -> None:
        """Nothing to release: the service owns its connections."""


class HttpGateway:
    """The gateway of a runner outside the service: the runner API over HTTP."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        signer: SigningKey,
        *,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.client = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self.client.headers["Authorization"] = f"Bearer {api_key}"
        self.signer = signer
        self._cursor = 0
        self._checked: dict[str, tuple[int, int, int]] = {}  # digest -> identity of the cached copy checked
        me = self._call("GET", "/v1/me")
        self.principal_id = str(me["id"])
        if "runner" not in me.get("roles", []):
            raise LedgerError(f"the API key belongs to {me.get('name')}, who lacks the runner role", field="api_key")
        self._ensure_key_registered(me)

    def _ensure_key_registered(self, me: dict[str, Any]) -> None:
        """Register this runner's key on its principal unless it is there (runners of one principal
        starting together may race for the principal's next version: the loser reads again and retries)."""
        from domain.principal import possession_message

        for attempt in range(REGISTER_TRIES):
            registered = self.signer.key_id in me.get("signing_keys", [])
            if registered and self.signer.key_id not in me.get("revoked_signing_keys", []):
                return
            if registered:
                raise LedgerError(
                    f"this runner's signing key {self.signer.key_id} was revoked; give the runner a new key (--key)",
                    field="key",
                )
            proof = self.signer.sign(possession_message(self.principal_id, self.signer.key_id))
            try:
                self._call(
                    "POST",
                    f"/v1/principals/{self.principal_id}/signing-keys",
                    json={"public_key_pem": public_key_pem(self.signer.public_key), "proof": proof},
                )
                log.info("registered runner signing key %s", self.signer.key_id)
                return
            except LedgerRefused as exc:
                if exc.status != 409 or attempt == REGISTER_TRIES - 1:
                    raise
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
            me = self._call("GET", "/v1/me")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LedgerUnavailable(f"cannot reach the ledger at {self.client.base_url}: {exc}") from None
        return self._answer(response)

    def _post_values(self, path: str, body: dict[str, Any]) -> Any:
        """POST a body of JSON values the runner built or checked itself (a claim carries the whole
        environment, a result the signed statement), encoded by orjson, several times faster than ``json``."""
        return self._call("POST", path, content=orjson.dumps(body), headers={"Content-Type": "application/json"})

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code >= 500:
            raise LedgerUnavailable(f"the ledger answered {response.status_code}")
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            detail = str(problem.get("detail") or problem.get("title") or response.status_code)
            raise LedgerRefused(response.status_code, detail)
        return response.json() if response.content else None

    def requested(self) -> list[dict[str, Any]]:
        """Newly requested runs since the last call."""
        answer = self._call("GET", "/v1/runner/requested", params={"after": self._cursor, "limit": 500})
        self._cursor = int(answer["cursor"])
        return list(answer["runs"])

    def claim(self, run_id: str, claim: dict[str, Any]) -> WorkOrder | None:
        """Claim a run; None when another runner holds it (409)."""
        try:
            return WorkOrder.from_json(self._post_values("/v1/runner/claims", {"run_id": run_id, **claim}))
        except LedgerRefused as exc:
            if exc.status == 409:
                return None
            raise

    def claim_first(self, run_ids: list[str], claim: dict[str, Any]) -> tuple[WorkOrder | None, list[str]]:
        """Claim the first of ``run_ids`` still awaiting a runner; its work order and the candidates passed over."""
        answer = self._post_values("/v1/runner/claims:first", {"run_ids": run_ids, **claim})
        order = None if answer["order"] is None else WorkOrder.from_json(answer["order"])
        return order, [str(run_id) for run_id in answer["passed_over"]]

    def attach(self, runner_id: str, backend: str) -> list[WorkOrder]:
        """Take over runs of ``backend`` whose runner went silent."""
        answer = self._call("POST", "/v1/runner/attachments", json={"runner_id": runner_id, "backend": backend})
        return [WorkOrder.from_json(order) for order in answer["orders"]]

    def fetch(self, order: WorkOrder, item: Input, cache: Path) -> Path:
        """Download an input into ``cache`` (kept by digest for later runs), checked against its digest."""
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = cache / item.digest.removeprefix("sha256:")
        if kept.is_file():
            # A copy this runner checked and nobody touched since is not hashed again.
            seen = _identity(kept)
            if self._checked.get(item.digest) == seen or file_digest(kept) == item.digest:
                self._checked[item.digest] = seen
                return kept
        kept = RunLedger(self.client, order).download(item, cache)
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[item.digest] = _identity(kept)
        return kept

    def upload(self, order: WorkOrder, path: Path) -> Output:
        """Upload an output file of the run."""
        return RunLedger(self.client, order).upload(path)

    def upload_all(self, order: WorkOrder, paths: list[Path]) -> list[Output]:
        """Upload several output files of the run in one request."""
        return RunLedger(self.client, order).upload_all(paths)

    def progress(self, order: WorkOrder, points: list[dict[str, Any]]) -> None:
        """Record progress metric points."""
        self._call("POST", f"/v1/runner/runs/{order.run_id}/metrics", json={"points": points})

    def heartbeat(self, runner_id: str, run_ids: list[str]) -> list[str]:
        """Sign of life; returns the runs that ended elsewhere."""
        answer = self._call("POST", "/v1/runner/heartbeats", json={"runner_id": runner_id, "run_ids": run_ids})
        return list(answer["ended"])

    def sweep(self) -> list[str]:
        """Mark silent runs abandoned."""
        return list(self._call("POST", "/v1/runner/sweeps")["abandoned"])

    def record(
        self,
        order: WorkOrder,
        statement: dict[str, Any],
        signature: str,
        metrics: list[dict[str, Any]],
        node_environment: dict[str, Any] | None,
    ) -> None:
        """Hand in the signed execution statement."""
        self._post_values(
            f"/v1/runner/runs/{order.run_id}/result",
            {"statement": statement, "signature": signature, "metrics": metrics, "node_environment": node_environment},
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced or written to: inode, size and modification time."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


__all__ = [
    "Gateway",
    "HttpGateway",
    "InProcessGateway",
    "LedgerRefused",
    "LedgerUnavailable",
]
