"""The batch body's fast reading agrees with pydantic's: it never accepts what pydantic refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api.routers.predictions import PredictBatchBody, _record, _well_formed_records
from service.serving.predict import PredictRecord

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
)
ids = st.one_of(st.none(), st.text(max_size=3), st.text(min_size=199, max_size=201), st.integers(0, 9), st.booleans())
inputs = st.one_of(st.dictionaries(st.text(max_size=3), scalars, max_size=4), scalars, st.lists(scalars, max_size=2))
records = st.one_of(
    st.fixed_dictionaries({"input": inputs}, optional={"request_id": ids, "subject_id": ids, "extra": scalars}),
    scalars,
)
bodies = st.one_of(
    st.fixed_dictionaries({"records": st.lists(records, max_size=4)}, optional={"more": scalars}),
    st.fixed_dictionaries({"records": scalars}),
    st.lists(records, max_size=2),
    scalars,
)


def _pydantic(body: Any) -> list[PredictRecord] | None:
    try:
        return [_record(r) for r in PredictBatchBody.model_validate_json(json.dumps(body)).records]
    except ValidationError:
        return None


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_the_fast_reading_accepts_only_what_pydantic_accepts_and_reads_it_alike(body: Any) -> None:
    fast = _well_formed_records(json.loads(json.dumps(body)))
    if fast is not None:
        assert fast == _pydantic(body)


def test_a_well_formed_batch_takes_the_fast_reading() -> None:
    body = {
        "records": [
            {"input": {"a": 1.5, "b": 2}, "request_id": "r-1"},
            {"input": {"a": -0.25, "b": 0}, "subject_id": "s-9", "request_id": None},
            {"input": {}},
        ]
    }
    fast = _well_formed_records(json.loads(json.dumps(body)))
    assert fast is not None and fast == _pydantic(body)
    assert [r.request_id for r in fast] == ["r-1", None, None] and fast[1].subject_id == "s-9"


@pytest.mark.parametrize(
    "body",
    [
        {"records": [{"input": {"a": 1}, "request_id": ""}]},
        {"records": [{"input": {"a": 1}, "request_id": "x" * 201}]},
        {"records": [{"input": {"a": 1}, "extra": 1}]},
        {"records": [{"input": [1]}]},
        {"records": [{"request_id": "r"}]},
        {"records": [], "more": 1},
        {"records": {"input": {}}},
        [{"input": {}}],
    ],
)
def test_a_body_pydantic_refuses_is_left_to_pydantic(body: Any) -> None:
    assert _pydantic(body) is None
    assert _well_formed_records(json.loads(json.dumps(body))) is None
