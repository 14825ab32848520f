"""Reading training tables: columns as text, numbers parsed, missing values and bad rows named."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from service.ml.tabular import TableError, first_non_numeric, parse_numeric, read_table


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_numbers_alone_parse_in_one_pass_as_float_does() -> None:
    values = ["1", "-2.5", "1e3", " 7 ", "inf", "nan", "NaN", "0.000001"]
    parsed = parse_numeric(values)
    assert parsed is not None
    assert parsed.dtype == np.float64
    expected = [float(v) for v in values]
    assert [math.isnan(x) for x in parsed] == [math.isnan(x) for x in expected]
    assert [x for x in parsed if not math.isnan(x)] == [x for x in expected if not math.isnan(x)]


@pytest.mark.parametrize("marker", ["", "NA", "na", "null", "None"])
def test_missing_markers_read_as_nan(marker: str) -> None:
    parsed = parse_numeric(["1.5", marker, "3"])
    assert parsed is not None
    assert parsed[0] == 1.5 and math.isnan(parsed[1]) and parsed[2] == 3.0


def test_a_value_that_is_no_number_makes_the_column_not_numeric() -> None:
    assert parse_numeric(["1", "", "red", "2"]) is None
    assert first_non_numeric(["1", "", "red", "2"]) == "red"


def test_read_table_keeps_the_wanted_columns_stripped_and_skips_empty_lines(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a, b ,c,label\n1, 2 ,x,0\n\n3,4,y,1\n")
    table = read_table(path, ["b", "a"], "label")
    assert table.n_rows == 2
    assert table.columns == {"b": ["2", "4"], "a": ["1", "3"], "label": ["0", "1"]}


def test_a_feature_that_is_also_the_target_is_read_once(tmp_path: Path) -> None:
    table = read_table(_csv(tmp_path, "x,y\n1,2\n3,4\n"), ["x", "y"], "y")
    assert table.columns["y"] == ["2", "4"]


def test_a_ragged_row_is_named_by_its_data_row_number(tmp_path: Path) -> None:
    path = _csv(tmp_path, "x,y\n1,2\n\n3,4\n5\n")
    with pytest.raises(TableError, match=r"data\.csv data row 3 has 1 fields, the header has 2"):
        read_table(path, ["x"], "y")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is empty \(no header row\)"),
        ("x,y\n", r"has no data rows"),
        ("x,y\n\n\n", r"has no data rows"),
        ("x\n1\n", r"target column 'y' not found"),
        ("y\n1\n", r"feature column 'x' not found"),
    ],
)
def test_tables_that_cannot_be_read_say_why(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_table(_csv(tmp_path, text), ["x"], "y")
