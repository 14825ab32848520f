"""Prediction: what a recorded decision must name, and what may happen to it
afterwards: one outcome, human overrides, never on a shadow (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import InvalidPayload, OutcomeAlreadyRecorded, ShadowNotServed
from domain.prediction import CHALLENGER, CHAMPION, Prediction, check_input_row, check_request_id

PREDICTOR = "user:paula"
DIGEST = "sha256:" + "ab" * 32
SCHEMA: list[dict[str, Any]] = [{"name": "age", "type": "number"}, {"name": "city", "type": "string", "nullable": True}]


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model_name": "credit",
        "model_version_id": "version-1",
        "number": 1,
        "role": CHAMPION,
        "request_id": "req-1",
        "shadow_of": None,
        "subject_id": None,
        "input_digest": DIGEST,
        "input": {"age": 41, "city": "Lyon"},
        "input_ciphertext": None,
        "input_key_id": None,
        "output": {"label": 1},
        "reason_codes": [],
        "explanation": None,
        "latency_ms": 1.5,
        "actor": PREDICTOR,
    }
    return fields | changes


def _shadow() -> Prediction:
    return Prediction.make(**_fields(role=CHALLENGER, shadow_of="served-1"))


def test_a_made_prediction_records_what_served_it_and_its_output() -> None:
    prediction = Prediction.make(**_fields())

    assert (prediction.model_name, prediction.number, prediction.role) == ("credit", 1, CHAMPION)
    assert prediction.output == {"label": 1}
    assert (prediction.has_outcome, prediction.overrides) == (False, [])


def test_the_event_alone_builds_the_same_prediction() -> None:
    made = Prediction.made(**_fields())

    prediction = made.mutate(None)

    assert isinstance(prediction, Prediction)
    assert prediction.id == Prediction.create_id(model_name="credit", request_id="req-1")
    assert prediction.output == {"label": 1}


def test_a_served_prediction_and_its_shadow_have_different_ids() -> None:
    served = Prediction.create_id(model_name="credit", request_id="req-1", role=CHAMPION)
    shadow = Prediction.create_id(model_name="credit", request_id="req-1", role=CHALLENGER)

    assert served != shadow


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"role": "oracle"}, "role", id="unknown-role"),
        pytest.param({"request_id": ""}, "request_id", id="empty-request-id"),
        pytest.param({"request_id": "a\nb"}, "request_id", id="control-character"),
        pytest.param({"subject_id": "x" * 201}, "subject_id", id="long-subject-id"),
        pytest.param({"input": None}, "input", id="no-input"),
        pytest.param({"input_ciphertext": "abc"}, "input", id="clear-and-encrypted-input"),
        pytest.param({"shadow_of": "served-1"}, "shadow_of", id="champion-shadowing"),
        pytest.param({"role": CHALLENGER}, "shadow_of", id="challenger-shadowing-nothing"),
    ],
)
def test_an_invalid_prediction_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        Prediction.make(**_fields(**changes))

    assert caught.value.field == field


def test_a_made_event_with_missing_fields_is_refused() -> None:
    fields = _fields()
    del fields["latency_ms"]

    with pytest.raises(TypeError, match="latency_ms"):
        Prediction.made(**fields)


def test_an_outcome_is_recorded_once() -> None:
    prediction = Prediction.make(**_fields())
    prediction.record_outcome(1, actor=PREDICTOR)

    with pytest.raises(OutcomeAlreadyRecorded):
        prediction.record_outcome(0, actor=PREDICTOR)

    assert (prediction.has_outcome, prediction.outcome) == (True, 1)


def test_a_shadow_prediction_takes_no_outcome() -> None:
    shadow = _shadow()

    with pytest.raises(ShadowNotServed):
        shadow.record_outcome(1, actor=PREDICTOR)

    assert not shadow.has_outcome


def test_an_override_is_recorded_with_its_reason_and_actor() -> None:
    prediction = Prediction.make(**_fields())

    prediction.override({"label": 0}, "income verified by phone", actor="user:oscar")

    assert prediction.overrides == [
        {"decision": {"label": 0}, "reason": "income verified by phone", "actor": "user:oscar"}
    ]
    assert isinstance(prediction.pending_events[-1], Prediction.Overridden)


def test_a_shadow_prediction_cannot_be_overridden() -> None:
    with pytest.raises(ShadowNotServed):
        _shadow().override({"label": 0}, "never served", actor="user:oscar")


@pytest.mark.parametrize(
    ("decision", "reason", "field"),
    [
        pytest.param({"label": 0}, "  ", "reason", id="blank-reason"),
        pytest.param({"label": 0}, "x" * 2001, "reason", id="long-reason"),
        pytest.param({}, "because", "decision", id="empty-decision"),
    ],
)
def test_an_override_needs_a_reason_and_a_decision(decision: dict[str, Any], reason: str, field: str) -> None:
    prediction = Prediction.make(**_fields())

    with pytest.raises(InvalidPayload) as caught:
        prediction.override(decision, reason, actor="user:oscar")

    assert caught.value.field == field
    assert prediction.overrides == []


def test_an_input_row_comes_back_in_schema_order() -> None:
    assert list(check_input_row({"city": None, "age": 3}, SCHEMA)) == ["age", "city"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        pytest.param({"age": 3}, "input.city", id="missing-feature"),
        pytest.param({"age": 3, "city": "x", "zip": 1}, "input.zip", id="extra-feature"),
        pytest.param({"age": "3", "city": "x"}, "input.age", id="text-for-number"),
        pytest.param({"age": float("nan"), "city": "x"}, "input.age", id="not-finite"),
        pytest.param({"age": None, "city": "x"}, "input.age", id="null-in-non-nullable"),
        pytest.param({"age": 3, "city": 4}, "input.city", id="number-for-text"),
    ],
)
def test_an_input_row_that_does_not_fit_the_schema_is_refused(row: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        check_input_row(row, SCHEMA)

    assert caught.value.field == field


def test_a_request_id_of_printable_text_is_accepted() -> None:
    assert check_request_id("req-42") == "req-42"
