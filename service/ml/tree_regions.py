"""Exact TreeSHAP values looked up by decision region, for ensembles of shallow trees.

Path-dependent TreeSHAP reads an input only through the decisions
``x[feature] <= threshold`` at a tree's nodes. A tree's thresholds cut each
feature it splits on into intervals, and every input whose values fall in the
same intervals gets the same SHAP values from that tree. A tree of depth 3
splits on at most 7 thresholds, so it has at most 2**7 such regions.

:func:`region_table` asks ``shap`` once, per tree, for the SHAP values of one
representative input of each region (``shap.TreeExplainer`` over that single
tree, as shap parsed it from the model), and keeps them in a table. Explaining
a row is then one comparison per threshold, an index per tree and a sum of
table rows: the values shap itself computed, summed in another order (they
agree to rounding, about 1e-15), several times faster than walking every
tree's paths again for every row.

The table is built only where it is exact and small: numeric splits only (no
categorical split types), inputs compared in the dtype shap compares them in,
at most :data:`MAX_REGIONS_PER_TREE` regions per tree and
:data:`MAX_TABLE_VALUES` values in all. Rows with a missing value (NaN) follow
each tree's default direction, which the regions do not model; such rows go to
shap directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import NDArray

MAX_REGIONS_PER_TREE = 4096
MAX_TABLE_VALUES = 8_000_000  # 64 MB of float64
_DENSE_ROWS = 32  # below this, gathering table rows beats a sparse product
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class RegionTable:
    """The SHAP values of every decision region of every tree, with the comparisons that find a row's regions.

    Per threshold (in tree order): the feature compared, the threshold and the
    weight of its step in the tree's region index; per tree: where its
    thresholds start and where its regions start in ``table``.
    """

    input_dtype: type[np.floating[Any]]
    features: NDArray[np.intp]
    thresholds: NDArray[np.float64]
    weights: NDArray[np.int64]
    starts: NDArray[np.intp]
    offsets: NDArray[np.int64]
    table: NDArray[np.float64]
    value_shape: tuple[int, ...]

    @property
    def regions(self) -> int:
        """How many regions all trees have together."""
        return len(self.table)

    def shap_values(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """SHAP values of ``X`` (rows without NaN), shaped as ``shap.TreeExplainer.shap_values`` shapes them."""
        X = np.asarray(X)
        if len(X) > _CHUNK_ROWS:  # bounds the per-threshold comparison matrix of a large report
            return np.concatenate([self._values(X[i : i + _CHUNK_ROWS]) for i in range(0, len(X), _CHUNK_ROWS)])
        return self._values(X)

    def _values(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        n, trees = len(X), len(self.offsets)
        compared = X.astype(self.input_dtype).astype(np.float64)  # shap compares in its input dtype
        steps = (compared[:, self.features] > self.thresholds) * self.weights
        index = np.add.reduceat(steps, self.starts, axis=1) + self.offsets
        if n < _DENSE_ROWS:
            flat = self.table[index].sum(axis=1)
        else:
            pick = scipy.sparse.csr_matrix(
                (np.ones(n * trees), index.ravel(), np.arange(0, n * trees + 1, trees)), shape=(n, len(self.table))
            )
            flat = np.asarray(pick @ self.table)
        return np.asarray(flat, dtype=np.float64).reshape((n, *self.value_shape))


def region_table(trees: list[Any], input_dtype: Any, n_features: int) -> RegionTable | None:
    """The region table of shap's parsed ``trees`` (``TreeExplainer(...).model.trees``).

    None where a table does not apply: a categorical split, too many regions.
    """
    import shap

    dtype = np.dtype(input_dtype).type
    if dtype not in (np.float32, np.float64) or not trees:
        return None
    found = [_regions(tree) for tree in trees]
    regions = [axes for axes in found if axes is not None]
    if len(regions) < len(found):
        return None
    sizes = [_size(axes) for axes in regions]
    if max(sizes) > MAX_REGIONS_PER_TREE:
        return None
    width: int | None = None
    features: list[int] = []
    thresholds: list[float] = []
    weights: list[int] = []
    starts: list[int] = []
    offsets: list[int] = []
    tables: list[NDArray[np.float64]] = []
    value_shape: tuple[int, ...] = ()
    total = 0
    for tree, axes, size in zip(trees, regions, sizes, strict=True):
        if not axes:
            continue  # a lone leaf: every SHAP value is 0
        grid = np.zeros((size, n_features))
        index = np.arange(size)
        starts.append(len(features))
        radix = 1
        for feature, cuts in axes:
            points = _representatives(cuts, dtype)
            grid[:, feature] = points[(index // radix) % len(points)]
            features.extend([feature] * len(cuts))
            thresholds.extend(cuts.tolist())
            weights.extend([radix] * len(cuts))
            radix *= len(points)
        values = np.asarray(
            shap.TreeExplainer([tree], feature_perturbation="tree_path_dependent").shap_values(
                grid, check_additivity=False
            ),
            dtype=np.float64,
        )
        if width is None:
            value_shape, width = values.shape[1:], int(np.prod(values.shape[1:]))
            if sum(sizes) * width > MAX_TABLE_VALUES:
                return None
        tables.append(values.reshape(size, width))
        offsets.append(total)
        total += size
    if not tables:
        return None
    return RegionTable(
        input_dtype=dtype,
        features=np.asarray(features, dtype=np.intp),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        weights=np.asarray(weights, dtype=np.int64),
        starts=np.asarray(starts, dtype=np.intp),
        offsets=np.asarray(offsets, dtype=np.int64),
        table=np.concatenate(tables),
        value_shape=value_shape,
    )


def _regions(tree: Any) -> list[tuple[int, NDArray[np.float64]]] | None:
    """Per feature the tree splits on, its sorted distinct thresholds; None for a split the regions cannot model."""
    internal = np.asarray(tree.children_left) >= 0
    kinds = getattr(tree, "threshold_types", None)
    if kinds is not None and np.any(np.asarray(kinds)[internal] != 0):
        return None  # categorical split sets
    features = np.asarray(tree.features)[internal]
    thresholds = np.asarray(tree.thresholds, dtype=np.float64)[internal]
    if not np.all(np.isfinite(thresholds)):
        return None
    return [(int(f), np.unique(thresholds[features == f])) for f in np.unique(features)]


def _size(axes: list[tuple[int, NDArray[np.float64]]]) -> int:
    size = 1
    for _, cuts in axes:
        size *= len(cuts) + 1
        if size > MAX_REGIONS_PER_TREE:
            break  # no need to multiply further
    return size


def _representatives(cuts: NDArray[np.float64], dtype: Callable[[Any], Any]) -> NDArray[np.float64]:
    """One value of ``dtype`` in each interval ``(-inf, c0], (c0, c1], ..., (c_last, inf)``.

    The largest value of ``dtype`` not above each cut, and the smallest one
    above the last cut: what an input of that dtype compares as.
    """
    points = []
    for cut in cuts:
        point = dtype(cut)
        if point > cut:
            point = np.nextafter(point, dtype(-np.inf))
        points.append(float(point))
    last = dtype(cuts[-1])
    if last <= cuts[-1]:
        last = np.nextafter(last, dtype(np.inf))
    points.append(float(last))
    return np.asarray(points)
