"""Model calls: a version's model predicts rows and its explainer gives their reason codes.

The fixed cost of a call (building the matrix, entering the model and the
explainer) dominates a single record, so rows of many requests go through one
call. Requests served on threads of their own share calls through a
:class:`~service.common.group_call.GroupCall` per version when they are small;
the predict queue gathers its requests itself and calls :meth:`Inference.predict`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from service.common.bounded_cache import BoundedCache
from service.common.group_call import GroupCall
from service.ml.explain import top_reason_codes
from service.serving.models import ServedModel

SHARED_INFERENCE_ROWS = 32  # requests up to this size share model calls with concurrent ones
_MAX_GROUPS = 1024  # versions with a shared call kept at once


@dataclass(frozen=True, slots=True)
class Inferred:
    """A model call's answers, by column: one output, reason codes and base value per row, in row order.

    By column, not one object per row: a call answers thousands of rows, and
    its parts go to the requests whose rows they were.
    """

    outputs: list[dict[str, Any]]
    reason_codes: list[list[dict[str, Any]]]
    base_values: list[float] | None  # the explainer's base value per row; None without explanations

    def __len__(self) -> int:
        return len(self.outputs)

    def rows(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], float | None]]:
        """(output, reason codes, base value) per row."""
        bases = itertools.repeat(None) if self.base_values is None else self.base_values
        return zip(self.outputs, self.reason_codes, bases, strict=False)  # the columns are of one length

    def split(self, sizes: list[int]) -> list[Inferred]:
        """Consecutive parts of ``sizes`` rows (the requests whose rows went through one call)."""
        parts: list[Inferred] = []
        start = 0
        bases = self.base_values
        for size in sizes:
            stop = start + size
            part_bases = None if bases is None else bases[start:stop]
            parts.append(Inferred(self.outputs[start:stop], self.reason_codes[start:stop], part_bases))
            start = stop
        return parts


Infer = Callable[[ServedModel, list[dict[str, Any]]], Inferred]
"""How a request's rows reach a model: :meth:`Inference.predict` or :meth:`Inference.shared`."""


@dataclass(frozen=True, slots=True)
class _Rows:
    """One request's rows for a version, waiting to share its call."""

    served: ServedModel
    rows: list[dict[str, Any]]


class Inference:
    """Predicts and explains rows with a version's model (``top_k`` reason codes per row; 0 for none)."""

    def __init__(self, top_k: int) -> None:
        self._top_k = top_k
        self._shared: BoundedCache[str, GroupCall[_Rows, Inferred]] = BoundedCache(_MAX_GROUPS)

    def predict(self, served: ServedModel, rows: list[dict[str, Any]]) -> Inferred:
        """The rows predicted and explained in one call."""
        matrix = served.model.matrix(rows)
        outputs = served.model.predict(matrix)
        if served.explainer is None or self._top_k == 0:
            return Inferred(outputs, [[] for _ in outputs], None)
        contributions, base = served.explainer.attributions(matrix)
        codes = top_reason_codes(contributions, rows, served.features, top_k=self._top_k)
        return Inferred(outputs, codes, base.tolist())

    def shared(self, served: ServedModel, rows: list[dict[str, Any]]) -> Inferred:
        """:meth:`predict`; small requests share the model's calls with concurrent ones (fixed costs paid once)."""
        if len(rows) > SHARED_INFERENCE_ROWS:
            return self.predict(served, rows)
        group = self._shared.get(served.version_id)
        if group is None:
            group = self._shared.setdefault(served.version_id, GroupCall(self._predict_each))
        return group(_Rows(served, rows))

    def _predict_each(self, asks: list[_Rows]) -> list[Inferred]:
        """The rows of several requests for one version predicted in one call, split back per request."""
        if len(asks) == 1:
            return [self.predict(asks[0].served, asks[0].rows)]
        inferred = self.predict(asks[0].served, [row for ask in asks for row in ask.rows])
        return inferred.split([len(ask.rows) for ask in asks])
