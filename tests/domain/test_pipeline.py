"""The Pipeline aggregate's rules: kinds, versioned specs, a run's parameters (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import InvalidPayload, PipelineKindMismatch, SpecUnchanged, UnknownSpecVersion
from domain.pipeline import Pipeline, spec_digest

ALICE = "user:alice"


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "features": ["age", "income"],
        "target": "default",
        "task": "classification",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params_schema": {"C": {"type": "float", "default": 1.0}, "max_iter": {"type": "int"}},
    }
    return spec | overrides


def _pipeline(*specs: dict[str, Any]) -> Pipeline:
    pipeline = Pipeline(name="credit", kind="sklearn", actor=ALICE)
    for spec in specs:
        pipeline.add_spec(spec, actor=ALICE)
    return pipeline


def test_a_pipeline_name_is_one_aggregate() -> None:
    assert Pipeline(name="credit", kind="sklearn", actor=ALICE).id == Pipeline.create_id(name="credit")


def test_a_pipeline_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        Pipeline.check_creation("credit", "tensorflow")

    assert caught.value.field == "kind"


def test_a_pipeline_keeps_the_kind_it_was_created_with() -> None:
    pipeline = _pipeline()

    with pytest.raises(PipelineKindMismatch) as caught:
        pipeline.check_kind("torch")

    assert caught.value.field == "kind"


def test_spec_versions_are_numbered_from_one() -> None:
    pipeline = _pipeline()

    numbers = [pipeline.add_spec(_spec(), actor=ALICE), pipeline.add_spec(_spec(target="late"), actor=ALICE)]

    assert numbers == [1, 2]
    assert pipeline.digests == [spec_digest(_spec()), spec_digest(_spec(target="late"))]


def test_a_spec_identical_to_the_latest_is_refused() -> None:
    pipeline = _pipeline(_spec())

    with pytest.raises(SpecUnchanged) as caught:
        pipeline.add_spec(_spec(), actor=ALICE)

    assert caught.value.field == "spec"


def test_an_earlier_spec_may_come_back_as_a_new_version() -> None:
    pipeline = _pipeline(_spec(), _spec(target="late"))

    assert pipeline.add_spec(_spec(), actor=ALICE) == 3


def test_an_invalid_spec_is_refused_naming_the_field() -> None:
    pipeline = _pipeline()

    with pytest.raises(InvalidPayload) as caught:
        pipeline.add_spec(_spec(estimator="os.system"), actor=ALICE)

    assert caught.value.field == "spec.estimator"


def test_a_missing_spec_version_is_refused() -> None:
    pipeline = _pipeline(_spec())

    with pytest.raises(UnknownSpecVersion) as caught:
        pipeline.spec(2)

    assert caught.value.field == "pipeline_version"


def test_a_run_uses_the_latest_spec_unless_it_names_one() -> None:
    pipeline = _pipeline(_spec(), _spec(target="late"))

    assert (pipeline.spec_number(None), pipeline.spec_number(1)) == (2, 1)


def test_a_run_cannot_name_a_spec_version_that_does_not_exist() -> None:
    pipeline = _pipeline(_spec())

    with pytest.raises(UnknownSpecVersion):
        pipeline.spec_number(5)


def test_a_runs_params_are_the_declared_defaults_overridden_by_its_own() -> None:
    pipeline = _pipeline(_spec())

    params = pipeline.run_params(1, {"max_iter": 50, "extra": "kept"})

    assert params == {"C": 1.0, "max_iter": 50, "extra": "kept"}


def test_a_run_param_of_the_wrong_declared_type_is_refused() -> None:
    pipeline = _pipeline(_spec())

    with pytest.raises(InvalidPayload) as caught:
        pipeline.run_params(1, {"max_iter": "fifty"})

    assert caught.value.field == "params.max_iter"
