"""Execution statements: what a runner signs about a run it executed.

Runners are untrusted compute outside the ledger service: they hold no ledger
key. Each runner principal registers its own Ed25519 key (with proof of
possession, like an approver) and signs, for every run it finishes, the
canonical JSON (RFC 8785) of a statement naming the run, what went in (the
spec, dataset and code digests), what it executed on (the environment digest),
what came out (output digests, the digest of the final metric points), what it
used and how it ended. The service checks the signature against the key the
runner registered and the inputs against the run's record before anything is
recorded, and keeps statement and signature in the run's events: every result
names the runner and the key that vouch for it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from domain.dataset import check_digest
from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json

STATEMENT_TYPE = "mlledger.execution-statement.v1"
OUTCOMES = ("succeeded", "failed")
STATEMENT_FIELDS = (
    "type",
    "run_id",
    "runner_id",
    "principal_id",
    "key_id",
    "outcome",
    "error",
    "inputs",
    "environment_digest",
    "outputs",
    "metrics_digest",
    "resources",
)
OUTPUT_NAME_MAX = 200
ERROR_MAX = 4096
MAX_OUTPUTS = 100


def metrics_digest(points: list[dict[str, Any]]) -> str:
    """``sha256:<hex>`` of the canonical JSON of the final metric points."""
    return "sha256:" + hashlib.sha256(canonical_json(points, path="metrics")).hexdigest()


def execution_statement(
    *,
    run_id: str,
    runner_id: str,
    principal_id: str,
    key_id: str,
    outcome: str,
    error: str | None,
    inputs: list[str],
    environment_digest: str | None,
    outputs: list[dict[str, Any]],
    metrics: list[dict[str, Any]],
    resources: dict[str, Any],
) -> dict[str, Any]:
    """The statement a runner signs about one execution of ``run_id``."""
    return {
        "type": STATEMENT_TYPE,
        "run_id": run_id,
        "runner_id": runner_id,
        "principal_id": principal_id,
        "key_id": key_id,
        "outcome": outcome,
        "error": error,
        "inputs": list(inputs),
        "environment_digest": environment_digest,
        "outputs": [dict(item) for item in outputs],
        "metrics_digest": metrics_digest(metrics),
        "resources": dict(resources),
    }


def statement_message(statement: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: the statement's canonical JSON."""
    return canonical_json(statement, path="statement")


def _check_output(item: Any, index: int) -> None:
    field = f"statement.outputs.{index}"
    if not isinstance(item, dict) or set(item) != {"name", "digest", "size", "media_type"}:
        raise InvalidPayload(f"{field} must have exactly name, digest, size and media_type", field=field)
    if not isinstance(item["name"], str) or not 0 < len(item["name"]) <= OUTPUT_NAME_MAX or "/" in item["name"]:
        raise InvalidPayload(f"{field}.name must be a file name of 1 to {OUTPUT_NAME_MAX} characters", field=field)
    check_digest(item["digest"], f"{field}.digest")
    if isinstance(item["size"], bool) or not isinstance(item["size"], int) or item["size"] < 0:
        raise InvalidPayload(f"{field}.size must be a non-negative integer", field=f"{field}.size")
    if not isinstance(item["media_type"], str) or not 0 < len(item["media_type"]) <= 100:
        raise InvalidPayload(f"{field}.media_type must be 1 to 100 characters", field=f"{field}.media_type")


def check_statement(statement: Any, run_id: str, expected_inputs: list[str]) -> dict[str, Any]:
    """The statement has exactly the expected fields, names this run and exactly its inputs."""
    if not isinstance(statement, dict):
        raise InvalidPayload("statement must be an object", field="statement")
    missing = sorted(set(STATEMENT_FIELDS) - statement.keys())
    extra = sorted(statement.keys() - set(STATEMENT_FIELDS))
    if missing or extra:
        raise InvalidPayload(f"statement fields differ: missing {missing}, unexpected {extra}", field="statement")
    if statement["type"] != STATEMENT_TYPE:
        raise InvalidPayload(f"statement.type must be {STATEMENT_TYPE}", field="statement.type")
    if statement["run_id"] != run_id:
        raise InvalidPayload("statement.run_id names another run", field="statement.run_id")
    if statement["outcome"] not in OUTCOMES:
        raise InvalidPayload(f"statement.outcome must be one of {', '.join(OUTCOMES)}", field="statement.outcome")
    error = statement["error"]
    if statement["outcome"] == "failed" and (not isinstance(error, str) or not error.strip()):
        raise InvalidPayload("a failed execution says why in statement.error", field="statement.error")
    if error is not None and (not isinstance(error, str) or len(error) > ERROR_MAX):
        raise InvalidPayload(f"statement.error must be a string of at most {ERROR_MAX} characters", field="error")
    for name in ("runner_id", "principal_id", "key_id"):
        if not isinstance(statement[name], str) or not 0 < len(statement[name]) <= 200:
            raise InvalidPayload(f"statement.{name} must be 1 to 200 characters", field=f"statement.{name}")
    if statement["inputs"] != expected_inputs:
        raise InvalidPayload(
            "statement.inputs are not the run's recorded inputs (spec, datasets, code, in that order)",
            field="statement.inputs",
        )
    if statement["environment_digest"] is not None:
        check_digest(statement["environment_digest"], "statement.environment_digest")
    outputs = statement["outputs"]
    if not isinstance(outputs, list) or len(outputs) > MAX_OUTPUTS:
        raise InvalidPayload(f"statement.outputs must be a list of at most {MAX_OUTPUTS}", field="statement.outputs")
    for index, item in enumerate(outputs):
        _check_output(item, index)
    if len({item["name"] for item in outputs}) != len(outputs):
        raise InvalidPayload("statement.outputs name a file twice", field="statement.outputs")
    check_digest(statement["metrics_digest"], "statement.metrics_digest")
    if not isinstance(statement["resources"], dict):
        raise InvalidPayload("statement.resources must be an object", field="statement.resources")
    return statement


__all__ = [
    "STATEMENT_TYPE",
    "check_statement",
    "execution_statement",
    "metrics_digest",
    "statement_message",
]
