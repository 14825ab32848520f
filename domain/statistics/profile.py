"""Streaming column profiles of tabular data: schema, row count and per-column
statistics in one pass with bounded memory, whatever the file size."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TRACKED_VALUES = 50
MISSING = {"", "na", "nan", "null", "none"}


def is_missing(value: Any) -> bool:
    """Whether a cell value counts as missing: None, NaN, or a string in :data:`MISSING`."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


def _parse_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class ColumnProfile:
    """Running statistics of one column."""

    name: str
    count: int = 0
    missing: int = 0
    numeric: int = 0
    integral: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    values: dict[str, int] = field(default_factory=dict)
    distinct_overflow: bool = False

    def add(self, raw: str) -> None:
        """Account for one cell."""
        self.count += 1
        text = raw.strip()
        if text.lower() in MISSING:
            self.missing += 1
            return
        number = _parse_number(text)
        if number is not None:
            self.numeric += 1
            if number.is_integer() and "." not in text and "e" not in text.lower():
                self.integral += 1
            delta = number - self.mean
            self.mean += delta / self.numeric
            self.m2 += delta * (number - self.mean)
            self.minimum = number if self.minimum is None else min(self.minimum, number)
            self.maximum = number if self.maximum is None else max(self.maximum, number)
        if text in self.values:
            self.values[text] += 1
        elif len(self.values) < MAX_TRACKED_VALUES:
            self.values[text] = 1
        else:
            self.distinct_overflow = True

    @property
    def type(self) -> str:
        """int, float, bool or string, inferred from the non-missing cells."""
        present = self.count - self.missing
        if present and self.numeric == present:
            return "int" if self.integral == present else "float"
        if present and set(v.lower() for v in self.values) <= {"true", "false"} and not self.distinct_overflow:
            return "bool"
        return "string"

    def summary(self) -> dict[str, Any]:
        """JSON-ready statistics."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "count": self.count, "missing": self.missing}
        if self.type in ("int", "float") and self.numeric:
            std = math.sqrt(self.m2 / (self.numeric - 1)) if self.numeric > 1 else 0.0
            out.update(min=self.minimum, max=self.maximum, mean=round(self.mean, 12), std=round(std, 12))
        else:
            top = sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            out.update(top_values=[{"value": v, "count": c} for v, c in top], distinct_capped=self.distinct_overflow)
        return out


@dataclass(frozen=True)
class TableProfile:
    """What was learned about a table."""

    schema: list[dict[str, str]]
    row_count: int
    columns: list[dict[str, Any]]


def profile_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> TableProfile:
    """Profile rows of text cells under ``header``; short rows count as missing cells."""
    columns = [ColumnProfile(name) for name in header]
    row_count = 0
    for row in rows:
        row_count += 1
        for index, column in enumerate(columns):
            column.add(row[index] if index < len(row) else "")
    return TableProfile(
        schema=[{"name": c.name, "type": c.type} for c in columns],
        row_count=row_count,
        columns=[c.summary() for c in columns],
    )
