"""Comparing a re-execution with the run it reproduces.

A reproduction is verified when the model artifact is byte-identical, or else
when its predictions on the recorded evaluation set equal the original's within
a stated tolerance. Otherwise it diverged, and the verdict names what differs:
parameters, final metrics, the environment, and the first differing prediction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from domain.environment import environment_diff
from domain.run import Run
from service.application.ledger import Ledger
from service.store.blobs import BlobStore

TOLERANCE = 1e-9
PREDICTIONS = "predictions.json"


@dataclass(frozen=True)
class Verdict:
    """The outcome of a comparison."""

    matched: bool
    method: str
    tolerance: float
    details: dict[str, Any]


def model_artifact(run: Run) -> str | None:
    """The name of the run's model file (the artifact that is neither JSON nor a log)."""
    names = sorted(n for n in run.artifacts if not n.endswith(".json"))
    return names[0] if names else None


def final_metrics(ledger: Ledger, run: Run) -> dict[str, float]:
    """The last value of each metric (at the highest step) from the run's events."""
    latest: dict[str, tuple[int, float]] = {}
    for domain_event in ledger.events.get(run.id):
        if isinstance(domain_event, Run.MetricsLogged):
            for point in domain_event.metrics:
                known = latest.get(point["key"])
                if known is None or point["step"] >= known[0]:
                    latest[point["key"]] = (point["step"], point["value"])
    return {key: value for key, (_, value) in latest.items()}


def _predictions(blobs: BlobStore, run: Run) -> dict[str, Any] | None:
    digest = run.artifacts.get(PREDICTIONS)
    if digest is None:
        return None
    loaded: dict[str, Any] = json.loads(b"".join(blobs.read_verified(digest)))
    return loaded


def _first_difference(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> dict[str, Any] | None:
    if a.get("ids") != b.get("ids"):
        return {"reason": "the evaluation rows differ"}
    for index, (x, y) in enumerate(zip(a.get("values", []), b.get("values", []), strict=False)):
        same = x == y or (
            isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isclose(x, y, abs_tol=tolerance)
        )
        if not same:
            return {"position": index, "row": a["ids"][index], "original": x, "reproduced": y}
    if len(a.get("values", [])) != len(b.get("values", [])):
        return {"reason": "different numbers of predictions"}
    return None


def compare_runs(
    ledger: Ledger, blobs: BlobStore, original: Run, reproduction: Run, tolerance: float = TOLERANCE
) -> Verdict:
    """Compare ``reproduction`` with ``original``."""
    name = model_artifact(original)
    if name is not None and reproduction.artifacts.get(name) == original.artifacts[name]:
        return Verdict(True, "artifact-digest", 0.0, {"artifact": name, "digest": original.artifacts[name]})
    first = second = None
    if PREDICTIONS in original.artifacts and PREDICTIONS in reproduction.artifacts:
        first, second = _predictions(blobs, original), _predictions(blobs, reproduction)
    difference = _first_difference(first, second, tolerance) if first and second else {"reason": "no predictions"}
    if difference is None:
        return Verdict(
            True, "predictions", tolerance, {"artifact": name, "predictions": len(first["values"]) if first else 0}
        )
    params = {
        key: {"original": original.params.get(key), "reproduced": reproduction.params.get(key)}
        for key in sorted(set(original.params) | set(reproduction.params))
        if original.params.get(key) != reproduction.params.get(key)
    }
    before, after = final_metrics(ledger, original), final_metrics(ledger, reproduction)
    metrics = {
        key: {"original": before.get(key), "reproduced": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }
    return Verdict(
        False,
        "predictions",
        tolerance,
        {
            "artifact": {
                "name": name,
                "original": original.artifacts.get(name or ""),
                "reproduced": reproduction.artifacts.get(name or ""),
            },
            "params": params,
            "metrics": metrics,
            "environment": environment_diff(original.environment, reproduction.environment),
            "first_differing_prediction": difference,
        },
    )
