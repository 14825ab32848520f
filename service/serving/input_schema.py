"""A model version's input schema as serving reads it: its columns, its fast paths and its canonical encoder.

Served predictions read it from the loaded model (:class:`~service.serving.models.ServedModel`);
logged predictions from the version's registered schema, without loading the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from domain.integrity.canonical import NumberRecordEncoder
from domain.prediction import TEXT_TYPES


class InputSchema:
    """The columns a version's input rows hold (``[{"name", "type", "nullable"}, ...]``)."""

    def __init__(self, columns: Sequence[dict[str, Any]]) -> None:
        self.columns = [dict(column) for column in columns]

    @cached_property
    def names(self) -> list[str]:
        """The column names, in schema order."""
        return [str(column["name"]) for column in self.columns]

    @cached_property
    def numeric_columns(self) -> tuple[str, ...] | None:
        """The input columns when every one takes a number and none is nullable (rows check in bulk), else None."""
        names = []
        for column in self.columns:
            if str(column.get("type", "number")).lower() in TEXT_TYPES or column.get("nullable", False):
                return None
            names.append(str(column["name"]))
        return tuple(names)

    @cached_property
    def numeric_names(self) -> frozenset[str] | None:
        """:attr:`numeric_columns` as a set (a row's keys compare with it in one step), or None."""
        columns = self.numeric_columns
        return None if columns is None or len(set(columns)) != len(columns) else frozenset(columns)

    @cached_property
    def encoder(self) -> NumberRecordEncoder:
        """Canonical JSON of input rows (fast for all-numeric rows, exact for any)."""
        return NumberRecordEncoder(self.numeric_columns or self.names)
