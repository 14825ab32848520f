"""The LoggedModel aggregate and the inputs and outputs a run records for MLflow
clients: ids, a status set once, tags removed by events, nothing repeated
(no database)."""

from __future__ import annotations

import uuid

import pytest

from domain.errors import InvalidPayload, RunDeleted
from domain.logged_model import LoggedModel, LoggedModelDeleted, LoggedModelFinalized, aggregate_id, public_id
from domain.run import Run

ALICE = "user:alice"


def _model(**tags: str) -> LoggedModel:
    return LoggedModel(
        experiment_id=str(uuid.uuid4()),
        name="model",
        source_run_id=str(uuid.uuid4()),
        model_type="sklearn",
        params={"C": "0.5"},
        tags=dict(tags),
        actor=ALICE,
    )


def _run() -> Run:
    return Run(
        name="r",
        mode="client",
        pipeline_id=None,
        pipeline_version=None,
        spec_digest=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=0,
        device="auto",
        reproduces=None,
        actor=ALICE,
    )


def test_a_model_id_round_trips_and_foreign_ids_are_not_ours() -> None:
    model = _model()

    assert aggregate_id(public_id(model.id)) == model.id
    assert aggregate_id("m-not-hex") is None
    assert aggregate_id(str(model.id)) is None


def test_the_status_is_set_once_and_ready_again_changes_nothing() -> None:
    model = _model()
    model.finalize("READY", actor=ALICE)
    recorded = len(model.collect_events())

    model.finalize("READY", actor=ALICE)

    assert model.status == "READY" and recorded == 2 and model.collect_events() == []
    with pytest.raises(LoggedModelFinalized):
        model.finalize("UPLOAD_FAILED", actor=ALICE)
    with pytest.raises(InvalidPayload):
        _model().finalize("PENDING", actor=ALICE)


def test_tags_are_set_and_removed_by_events_and_params_keep_their_first_value() -> None:
    model = _model(team="risk")

    model.set_tags({"team": None, "stage": "dev"}, actor=ALICE)
    model.log_params({"C": "9", "depth": "3"}, actor=ALICE)

    assert model.tags == {"stage": "dev"}
    assert model.params == {"C": "0.5", "depth": "3"}


def test_a_deleted_model_takes_nothing_new() -> None:
    model = _model()
    model.delete(actor=ALICE)

    with pytest.raises(LoggedModelDeleted):
        model.set_tags({"a": "b"}, actor=ALICE)
    with pytest.raises(LoggedModelDeleted):
        model.finalize("READY", actor=ALICE)


def test_bad_names_and_tags_are_refused() -> None:
    for name in ("", "a/b", "x" * 201):
        with pytest.raises(InvalidPayload):
            LoggedModel.check_creation(name, "", {}, {})
    with pytest.raises(InvalidPayload):
        LoggedModel.check_creation("model", "", {}, {"": "v"})


def test_a_run_records_each_dataset_and_output_once() -> None:
    run = _run()
    dataset = {"name": "loans", "digest": "a1b2", "source_type": "local", "source": "x", "tags": {}}

    run.log_inputs([dataset], ["m-1"], actor=ALICE)
    run.log_inputs([dataset], ["m-1"], actor=ALICE)
    run.log_outputs([{"model_id": "m-1", "step": 0}], actor=ALICE)
    run.log_outputs([{"model_id": "m-1", "step": 0}], actor=ALICE)

    kinds = [type(e).__name__ for e in run.collect_events()]
    assert kinds.count("InputsLogged") == 1 and kinds.count("OutputsLogged") == 1
    assert run.dataset_inputs == [dataset] and run.model_inputs == ["m-1"]
    run.delete(actor=ALICE)
    with pytest.raises(RunDeleted):
        run.log_inputs([dataset | {"digest": "ffff"}], [], actor=ALICE)
