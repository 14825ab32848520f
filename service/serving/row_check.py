"""The row check: each record's input against the input schema of the version that reads it.

A record the champion or the canary cannot read refuses the whole request
(422, naming the field); a record the challenger cannot read is simply not
shadowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from domain.errors import InvalidPayload
from domain.prediction import check_input_row
from service.serving.input_schema import InputSchema
from service.serving.prediction_request import PredictRecord
from service.serving.routing import Route

_PLAIN_NUMBERS = frozenset({float, int})


def check_rows(records: Sequence[PredictRecord], route: Route, out: list[dict[str, Any]]) -> None:
    """Check the records routed to ``route`` against its version's input schema into ``out`` (by index)."""
    check_inputs([record.input for record in records], route.indexes, route.served.schema, out)


def check_inputs(rows: Sequence[Any], indexes: Sequence[int], schema: InputSchema, out: list[dict[str, Any]]) -> None:
    """Check the input rows at ``indexes`` against ``schema`` into ``out`` (by index; fields ``records.<i>.input``).

    The common case, an all-numeric schema and rows holding exactly its columns
    with finite ints and floats, is accepted in a few C-level passes (the row
    itself is kept: consumers read it by name); anything else goes through
    :func:`check_input_row`, which accepts the same rows (in schema order) and
    names the field of the first problem.
    """
    names, columns = schema.numeric_names, schema.columns
    for i in indexes:
        row = rows[i]
        if names is not None and type(row) is dict and row.keys() == names:
            values = row.values()
            # All plain ints and floats, all finite: fsum of finite numbers is finite
            # unless it overflows (then the slow way decides), and an infinity or a NaN
            # makes it infinite or NaN. Inline, not a function: this runs once per row.
            try:
                plain = set(map(type, values)) <= _PLAIN_NUMBERS and math.isfinite(math.fsum(values))
            except OverflowError:
                plain = False
            if plain:
                out[i] = row  # exactly the schema's columns, all finite numbers: the row as it came
                continue
        out[i] = check_input_row(row, columns, field=f"records.{i}.input")


def shadow_rows(records: Sequence[PredictRecord], challenger: Route) -> dict[int, dict[str, Any]]:
    """The checked rows of the records the challenger can read, by index (the others it does not shadow)."""
    schema = challenger.served.input_schema
    rows: dict[int, dict[str, Any]] = {}
    for i in challenger.indexes:
        try:
            rows[i] = check_input_row(records[i].input, schema)
        except InvalidPayload:
            continue  # the challenger cannot read this record; it simply does not shadow it
    return rows
