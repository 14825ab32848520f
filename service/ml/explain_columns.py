"""Tracing a scikit-learn preprocessing Pipeline's output columns back to the model's original features.

An explainer attributes the final estimator's output to the transformed
columns; :func:`column_groups` says which original feature each of those
columns came from, so the contributions can be summed back per feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.ml.model_loading import SklearnModel, UnsupportedModel

__all__ = ["column_groups"]


def column_groups(model: SklearnModel, width: int) -> NDArray[np.float64]:
    """A 0/1 matrix ``(transformed columns, features)``: which original feature each transformed column comes from.

    Understands ColumnTransformers (one-to-one transformers, OneHotEncoders,
    pipelines ending in either, passthrough and dropped columns) and one-to-one
    steps; anything else cannot be mapped back and is refused.
    """
    n = len(model.features)
    sources = list(range(n))
    if model.preprocess is not None:
        for _, step in model.preprocess.steps:
            sources = _step_sources(step, sources)
    if len(sources) != width:
        raise UnsupportedModel(f"the preprocessing makes {width} columns, but {len(sources)} were traced")
    groups = np.zeros((width, n))
    groups[np.arange(width), sources] = 1.0
    return groups


def _step_sources(step: Any, sources: list[int]) -> list[int]:
    from sklearn.compose import ColumnTransformer

    if step == "passthrough" or step is None:
        return sources
    if not isinstance(step, ColumnTransformer):
        width = len(_feature_names_out(step, len(sources)))
        if width != len(sources):
            raise UnsupportedModel(f"{type(step).__name__} changes the number of columns; it cannot be explained")
        return sources
    out: list[int] = [-1] * sum(s.stop - s.start for s in step.output_indices_.values())
    for name, transformer, columns in step.transformers_:
        span = step.output_indices_.get(name)
        if span is None or span.stop == span.start or transformer == "drop":
            continue
        inputs = _column_indices(columns, len(sources))
        widths = _widths(transformer, len(inputs), span.stop - span.start)
        position = span.start
        for column, width in zip(inputs, widths, strict=True):
            out[position : position + width] = [sources[column]] * width
            position += width
    if -1 in out:
        raise UnsupportedModel("the preprocessing makes a column that no feature maps to")
    return out


def _feature_names_out(step: Any, width: int) -> list[str]:
    try:
        return list(step.get_feature_names_out([f"x{i}" for i in range(width)]))
    except Exception:
        raise UnsupportedModel(f"{type(step).__name__} does not say which columns it makes") from None


def _column_indices(columns: Any, width: int) -> list[int]:
    if isinstance(columns, slice):
        return list(range(width))[columns]
    array = np.asarray(columns)
    if array.dtype == bool:
        return [int(i) for i in np.flatnonzero(array)]
    if array.dtype.kind not in "iu":
        raise UnsupportedModel("the preprocessing selects columns by name; only positions can be traced")
    return [int(i) for i in array.reshape(-1)]


def _widths(transformer: Any, n_inputs: int, width: int) -> list[int]:
    """How many output columns each input column of a ColumnTransformer part makes."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    encoder = transformer[-1] if isinstance(transformer, Pipeline) else transformer
    if isinstance(encoder, OneHotEncoder):
        if getattr(encoder, "_infrequent_enabled", False):
            raise UnsupportedModel("one-hot encoding with infrequent categories cannot be traced to features")
        dropped = encoder.drop_idx_ if encoder.drop_idx_ is not None else [None] * n_inputs
        widths = [len(c) - (d is not None) for c, d in zip(encoder.categories_, dropped, strict=True)]
    elif width == n_inputs:
        widths = [1] * n_inputs
    else:
        raise UnsupportedModel(f"{type(transformer).__name__} maps {n_inputs} columns to {width}; it cannot be traced")
    if sum(widths) != width:
        raise UnsupportedModel(f"{type(transformer).__name__} makes {width} columns, {sum(widths)} were traced")
    return widths
