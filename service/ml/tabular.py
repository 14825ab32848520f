"""Tabular training data for the sklearn and torch kinds: CSV columns, typed and split.

CSV is read with the standard library (no pandas). A column is numeric when
every non-missing value parses as a number; empty cells and ``NA``/``NaN`` are
missing. Anything else is categorical and must be declared for encoding.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import LedgerError


class TableError(LedgerError):
    """A table cannot be read as the spec says: a missing column, a value that is not a number.

    The message is one line that says why. Runners record it as the run's error
    (``execute`` turns it into an ``ExecutionError``).
    """

    title = "Execution failed"


MISSING = frozenset({"", "na", "nan", "null", "none"})


@dataclass(frozen=True)
class Table:
    """The spec's feature and target columns of one CSV file, as text."""

    name: str
    columns: dict[str, list[str]]
    n_rows: int


def read_table(path: Path, features: list[str], target: str) -> Table:
    """Read the feature and target columns of ``path``; refuse a missing column or ragged row."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TableError(f"cannot read dataset {path.name}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"dataset {path.name} is empty (no header row)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TableError(f"dataset {path.name} is not readable CSV: {exc}") from None
        index = {name.strip(): i for i, name in enumerate(header)}
        if target not in index:
            raise TableError(f"target column {target!r} not found in {path.name}")
        for feature in features:
            if feature not in index:
                raise TableError(f"feature column {feature!r} not found in {path.name}")
        positions = {name: index[name] for name in [*features, target]}  # a target among the features once
        columns: dict[str, list[str]] = {name: [] for name in positions}
        n_rows = 0
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise TableError(
                        f"{path.name} data row {n_rows + 1} has {len(row)} fields, the header has {len(header)}"
                    )
                for name, at in positions.items():
                    columns[name].append(row[at].strip())
                n_rows += 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TableError(f"dataset {path.name} is not readable CSV: {exc}") from None
    if n_rows == 0:
        raise TableError(f"dataset {path.name} has no data rows")
    return Table(path.name, columns, n_rows)


def parse_numeric(values: list[str]) -> NDArray[np.float64] | None:
    """The column as floats (NaN where missing), or None when a value is not a number."""
    try:  # a column of numbers alone (the common case) in one pass; "nan" reads as NaN either way
        return np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:  # a missing marker such as "" or "NA", or a value that is not a number
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value.lower() in MISSING:
            out[i] = math.nan
            continue
        try:
            out[i] = float(value)
        except ValueError:
            return None
    return out


def first_non_numeric(values: list[str]) -> str:
    """The first value of a column that is neither missing nor a number."""
    for value in values:
        if value.lower() in MISSING:
            continue
        try:
            float(value)
        except ValueError:
            return value
    return ""


def classification_target(table: Table, target: str) -> NDArray[Any]:
    """Class labels: integers when every label is an integral number, else strings."""
    values = table.columns[target]
    for row, value in enumerate(values, start=1):
        if value.lower() in MISSING:
            raise TableError(f"target {target!r} is missing in {table.name} data row {row}")
    numbers = parse_numeric(values)
    if numbers is not None and all(float(v).is_integer() for v in numbers):
        return numbers.astype(np.int64)
    return np.array(values, dtype=str)


def regression_target(table: Table, target: str) -> NDArray[np.float64]:
    """Numeric target values; refuse missing or non-numeric ones."""
    numbers = parse_numeric(table.columns[target])
    if numbers is None:
        example = first_non_numeric(table.columns[target])
        raise TableError(f"regression target {target!r} has a non-numeric value {example!r}")
    if np.isnan(numbers).any():
        row = int(np.flatnonzero(np.isnan(numbers))[0]) + 1
        raise TableError(f"target {target!r} is missing in {table.name} data row {row}")
    return numbers


def numeric_features(table: Table, features: list[str], kind: str) -> NDArray[np.float64]:
    """All features as a float matrix; refuse non-numeric and missing values (torch kind)."""
    matrix = np.empty((table.n_rows, len(features)), dtype=np.float64)
    for j, feature in enumerate(features):
        column = parse_numeric(table.columns[feature])
        if column is None:
            example = first_non_numeric(table.columns[feature])
            raise TableError(f"feature {feature!r} is not numeric (e.g. {example!r}); the {kind} kind needs numbers")
        if np.isnan(column).any():
            raise TableError(f"feature {feature!r} has missing values; the {kind} kind needs complete data")
        matrix[:, j] = column
    return matrix


def validation_split(spec: dict[str, Any]) -> float:
    """``spec.validation_split`` (default 0.2), a fraction strictly between 0 and 1."""
    value = spec.get("validation_split", 0.2)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise TableError(f"spec.validation_split must be a fraction between 0 and 1, got {value!r}")
    return float(value)


def split_rows(y: NDArray[Any], task: str, fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Train and validation row indices (sorted), seeded and stratified for classification."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y), dtype=np.int64)
    try:
        train, validation = train_test_split(
            rows, test_size=fraction, random_state=seed, stratify=y if task == "classification" else None
        )
    except ValueError as exc:
        raise TableError(f"cannot split {len(y)} rows for validation: {exc}") from None
    return np.sort(train), np.sort(validation)


def as_json_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON can carry."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_predictions(path: Path, ids: list[int], values: list[Any]) -> Path:
    """Write ``{"ids": [...], "values": [...]}``; the same inputs give the same bytes."""
    payload = {"ids": [int(i) for i in ids], "values": [as_json_value(v) for v in values]}
    path.write_text(json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")
    return path
