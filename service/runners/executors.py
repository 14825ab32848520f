"""Execute one recorded pipeline from its spec: the single entry point for runners.

``execute`` checks the request and the spec, then hands it to the kind's
executor (``sklearn_kind``, ``torch_kind``, ``python_kind``). Everything comes
from the request; nothing is implicit, and the same seed gives the same result.
Bad specs and bad data raise :class:`ExecutionError` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from domain.errors import InvalidPayload
from domain.pipeline import KINDS, check_spec
from service.ml.tabular import TableError
from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult, Progress

__all__ = ["ExecutionError", "ExecutionRequest", "ExecutionResult", "Progress", "execute"]


def _ignore(points: list[dict[str, Any]]) -> None:
    """Progress callback that drops the points."""


def check_request(request: ExecutionRequest) -> None:
    """Refuse a request that no executor can run: unknown kind or device, bad spec, missing files."""
    if request.kind not in KINDS:
        raise ExecutionError(f"unknown pipeline kind {request.kind!r} (known: {', '.join(KINDS)})")
    if request.device not in ("cpu", "cuda"):
        raise ExecutionError(f"device must be resolved to cpu or cuda, got {request.device!r}")
    if isinstance(request.seed, bool) or not isinstance(request.seed, int) or not 0 <= request.seed < 2**32:
        raise ExecutionError(f"seed must be an integer in [0, 2**32), got {request.seed!r}")
    if not isinstance(request.params, dict):
        raise ExecutionError("params must be an object")
    try:
        check_spec(request.kind, request.spec)
    except InvalidPayload as exc:
        raise ExecutionError(f"invalid spec: {exc.detail}") from None
    if not request.output_dir.is_dir():
        raise ExecutionError(f"output folder {request.output_dir} does not exist")
    if request.kind != "python" and not request.datasets:
        raise ExecutionError(f"the {request.kind} kind needs a dataset (the first is the training data)")
    for dataset in request.datasets:
        if not dataset.is_file():
            raise ExecutionError(f"dataset file {dataset} does not exist")
    if request.code_archive is not None and not request.code_archive.is_file():
        raise ExecutionError(f"code archive {request.code_archive} does not exist")


def execute(request: ExecutionRequest, progress: Progress = _ignore) -> ExecutionResult:
    """Run ``request`` in this process; ``progress`` receives metric points as they happen."""
    check_request(request)
    try:
        result = _execute_kind(request, progress)
    except TableError as exc:
        raise ExecutionError(exc.detail) from None
    result.details.update(kind=request.kind, seed=request.seed, datasets=[p.name for p in request.datasets])
    result.details.setdefault("device", request.device)
    return result


def preload(kind: str, spec: Mapping[str, Any]) -> None:
    """Import what executing a run of ``kind`` needs (for scikit-learn, the spec's estimator), so an execution
    child started before its inputs arrive spends its start-up while they download. Anything that fails
    here is left for the execution itself to report."""
    with contextlib.suppress(Exception):
        if kind == "sklearn":
            from service.runners.sklearn_kind import resolve_estimator

            resolve_estimator(spec.get("estimator"))
        elif kind == "torch":
            if importlib.util.find_spec("torch") is not None:
                import torch  # noqa: F401

                import service.runners.torch_kind
        elif kind == "python":
            import service.runners.python_kind  # noqa: F401


def _execute_kind(request: ExecutionRequest, progress: Progress) -> ExecutionResult:
    if request.kind == "sklearn":
        from service.runners.sklearn_kind import execute_sklearn

        return execute_sklearn(request)
    elif request.kind == "torch":
        if importlib.util.find_spec("torch") is None:
            raise ExecutionError("the torch kind needs PyTorch, which is not installed on this runner")
        from service.runners.torch_kind import execute_torch

        return execute_torch(request, progress)
    else:
        from service.runners.python_kind import execute_python

        return execute_python(request)
