"""Model and ModelVersion: numbering, registration checks, signed decisions and
the approval policy's verdict (no database)."""

from __future__ import annotations

import pytest
from support.model_builders import (
    REGISTRAR,
    RUN_DIGEST,
    SCHEMA,
    SUBMITTER,
    Approver,
    model,
    registered_version,
    succeeded_run,
)

from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.errors import (
    AlreadyDecided,
    ArtifactNotInRun,
    DecisionsClosed,
    FairnessReportMissing,
    InvalidPayload,
    InvalidStatementSignature,
    RunNotSucceeded,
    SeparationOfDutiesViolated,
    StatementNotForThisVersion,
)
from domain.model import APPROVED, PENDING, REJECTED, Model, ModelVersion
from domain.run import Run

# -- Model: policy and numbering ---------------------------------------------------


def test_a_new_model_has_no_versions_and_the_policy_it_was_created_with() -> None:
    created = model(policy={"required_approvals": 3})

    assert created.versions == []
    assert created.policy.required_approvals == 3


def test_a_changed_policy_applies_from_then_on() -> None:
    target = model()

    target.change_policy({"required_approvals": 1, "separation_of_duties": False}, actor=REGISTRAR)

    assert target.policy == ApprovalPolicy(required_approvals=1, separation_of_duties=False)
    assert isinstance(target.pending_events[-1], Model.PolicyChanged)


def test_an_invalid_policy_is_refused_and_the_old_one_stays() -> None:
    target = model()

    with pytest.raises(InvalidPayload) as caught:
        target.change_policy({"required_approvals": 0}, actor=REGISTRAR)

    assert caught.value.field == "policy.required_approvals"
    assert target.policy == ApprovalPolicy()


def test_the_first_version_is_number_one() -> None:
    version = registered_version(model())

    assert version.number == 1


def test_each_new_version_gets_the_next_number() -> None:
    target = model()

    numbers = [registered_version(target).number for _ in range(3)]

    assert numbers == [1, 2, 3]
    assert target.next_number() == 4


def test_a_registered_version_is_recorded_in_its_model_by_id() -> None:
    target = model()

    version = registered_version(target)

    assert target.versions == [str(version.id)]
    added = target.pending_events[-1]
    assert isinstance(added, Model.VersionAdded)
    assert (added.number, added.model_version_id) == (1, str(version.id))


def test_a_version_records_its_run_artifact_and_who_registered_it() -> None:
    run = succeeded_run(submitted_by=SUBMITTER)

    version = model().add_version(
        run=run, run_digest=RUN_DIGEST, artifact_name="model.pkl", input_schema=SCHEMA, actor=REGISTRAR
    )

    assert (version.run_id, version.run_digest, version.artifact_digest) == (
        str(run.id),
        RUN_DIGEST,
        run.artifacts["model.pkl"],
    )
    assert (version.run_submitted_by, version.registered_by) == (SUBMITTER, REGISTRAR)
    assert (version.approvers, version.rejecters) == ([], [])


def test_the_same_model_and_number_always_give_the_same_version_id() -> None:
    assert ModelVersion.create_id(model_name="credit", number=2) == ModelVersion.create_id(
        model_name="credit", number=2
    )
    assert ModelVersion.create_id(model_name="credit", number=2) != ModelVersion.create_id(
        model_name="credit", number=3
    )


def test_a_version_of_a_run_that_did_not_succeed_is_refused() -> None:
    run = Run(
        name="train",
        mode="client",
        pipeline_id=None,
        pipeline_version=None,
        spec_digest=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={},
        seed=1,
        device="cpu",
        reproduces=None,
        actor=SUBMITTER,
    )
    target = model()

    with pytest.raises(RunNotSucceeded) as caught:
        target.add_version(
            run=run, run_digest=RUN_DIGEST, artifact_name="model.pkl", input_schema=SCHEMA, actor=REGISTRAR
        )

    assert caught.value.field == "run_id"
    assert target.versions == []


def test_a_version_of_an_artifact_the_run_did_not_record_is_refused() -> None:
    with pytest.raises(ArtifactNotInRun) as caught:
        model().add_version(
            run=succeeded_run(), run_digest=RUN_DIGEST, artifact_name="other.pkl", input_schema=SCHEMA, actor=REGISTRAR
        )

    assert caught.value.field == "artifact_name"


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        pytest.param({"name": "age"}, "input_schema", id="not-a-list"),
        pytest.param([{"type": "number"}], "input_schema.0", id="column-without-name"),
        pytest.param([{"name": "age"}, "city"], "input_schema.1", id="column-not-an-object"),
    ],
)
def test_an_invalid_input_schema_is_refused_naming_the_column(schema: object, field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        model().add_version(
            run=succeeded_run(),
            run_digest=RUN_DIGEST,
            artifact_name="model.pkl",
            input_schema=schema,  # type: ignore[arg-type]
            actor=REGISTRAR,
        )

    assert caught.value.field == field


def test_an_invalid_model_name_is_refused() -> None:
    with pytest.raises(InvalidPayload) as caught:
        ModelVersion.check_registration("", SCHEMA)

    assert caught.value.field == "model_name"


# -- ModelVersion: signed decisions ----------------------------------------------------


def test_a_new_version_is_pending() -> None:
    assert registered_version().state(ApprovalPolicy()) == PENDING


def test_an_approval_is_recorded_with_its_approver() -> None:
    version = registered_version()

    decision = Approver("alice").decide(version)

    assert decision == "approve"
    assert version.approvers == ["alice"]
    assert isinstance(version.pending_events[-1], ModelVersion.ApprovalGranted)


def test_a_rejection_is_recorded_with_its_approver() -> None:
    version = registered_version()

    decision = Approver("alice").decide(version, "reject")

    assert decision == "reject"
    assert version.rejecters == ["alice"]
    assert isinstance(version.pending_events[-1], ModelVersion.ApprovalRejected)


def test_one_approval_leaves_a_version_pending_under_a_two_approver_policy() -> None:
    version = registered_version()

    Approver("alice").decide(version)

    assert version.state(ApprovalPolicy(required_approvals=2)) == PENDING


def test_two_independent_approvals_approve_a_version_under_a_two_approver_policy() -> None:
    version = registered_version()

    Approver("alice").decide(version)
    Approver("bob").decide(version)

    assert version.state(ApprovalPolicy(required_approvals=2)) == APPROVED


def test_one_rejection_rejects_a_version_when_rejections_block() -> None:
    version = registered_version()
    Approver("alice").decide(version)
    Approver("bob").decide(version)

    Approver("carol").decide(version, "reject", policy=ApprovalPolicy(required_approvals=3))

    assert version.state(ApprovalPolicy(required_approvals=2, rejection_blocks=True)) == REJECTED


def test_a_rejection_does_not_block_when_the_policy_says_so() -> None:
    policy = ApprovalPolicy(required_approvals=2, rejection_blocks=False)
    version = registered_version()
    Approver("carol").decide(version, "reject", policy=policy)

    Approver("alice").decide(version, policy=policy)
    Approver("bob").decide(version, policy=policy)

    assert version.state(policy) == APPROVED


def test_the_submitter_of_the_run_may_not_approve_its_version() -> None:
    version = registered_version()

    with pytest.raises(SeparationOfDutiesViolated) as caught:
        Approver(SUBMITTER).decide(version)

    assert "submitted its run" in caught.value.detail
    assert caught.value.field == "approver"
    assert version.approvers == []


def test_the_registrar_of_a_version_may_not_approve_it() -> None:
    version = registered_version()

    with pytest.raises(SeparationOfDutiesViolated) as caught:
        Approver(REGISTRAR).decide(version)

    assert "registered this version" in caught.value.detail


def test_without_separation_of_duties_the_registrar_may_approve() -> None:
    version = registered_version()

    Approver(REGISTRAR).decide(version, policy=ApprovalPolicy(separation_of_duties=False))

    assert version.approvers == [REGISTRAR]


def test_an_approver_decides_once() -> None:
    version = registered_version()
    alice = Approver("alice")
    alice.decide(version)

    with pytest.raises(AlreadyDecided):
        alice.decide(version, "reject")

    assert (version.approvers, version.rejecters) == (["alice"], [])


def test_a_rejected_version_takes_no_more_decisions_when_rejections_block() -> None:
    version = registered_version()
    Approver("alice").decide(version, "reject")

    with pytest.raises(DecisionsClosed) as caught:
        Approver("bob").decide(version)

    assert caught.value.field == "statement.decision"
    assert version.approvers == []


def test_a_statement_about_another_version_is_refused_naming_the_field() -> None:
    version = registered_version()

    with pytest.raises(StatementNotForThisVersion) as caught:
        Approver("alice").decide(version, artifact_digest="sha256:" + "00" * 32)

    assert caught.value.field == "statement.artifact_digest"


def test_a_statement_naming_another_approver_is_refused() -> None:
    version = registered_version()

    with pytest.raises(StatementNotForThisVersion) as caught:
        Approver("alice").decide(version, approver="bob")

    assert caught.value.field == "statement.approver"


def test_a_statement_signed_by_another_key_is_refused() -> None:
    version = registered_version()
    alice, impostor = Approver("alice"), Approver("alice")
    statement = alice.statement(version)

    with pytest.raises(InvalidStatementSignature) as caught:
        version.decide(
            approver="alice",
            key_id=alice.key_id,
            public_key_pem=alice.public_key_pem,
            statement=statement,
            signature=impostor.signer.sign(b"something else"),
            policy=ApprovalPolicy(),
            fairness=FairnessEvidence(),
            actor="user:alice",
        )

    assert caught.value.field == "signature"
    assert version.approvers == []


def test_a_statement_with_an_unknown_decision_is_refused() -> None:
    version = registered_version()

    with pytest.raises(InvalidPayload) as caught:
        Approver("alice").decide(version, decision="maybe")

    assert caught.value.field == "statement.decision"


# -- The fairness gate fails closed ----------------------------------------------

REPORT_DUE_MISSING = FairnessEvidence(protected_attributes=("sex",), summary=None)


def test_an_approval_is_refused_while_the_due_fairness_report_is_missing() -> None:
    version = registered_version()

    with pytest.raises(FairnessReportMissing) as caught:
        Approver("alice").decide(version, fairness=REPORT_DUE_MISSING)

    assert "no fairness report yet" in caught.value.detail
    assert version.approvers == []
    assert isinstance(version.pending_events[-1], ModelVersion.Registered)


def test_a_rejection_needs_no_fairness_report() -> None:
    version = registered_version()

    Approver("alice").decide(version, "reject", fairness=REPORT_DUE_MISSING)

    assert version.rejecters == ["alice"]


def test_separation_of_duties_is_named_before_a_missing_fairness_report() -> None:
    version = registered_version()

    with pytest.raises(SeparationOfDutiesViolated):
        Approver(SUBMITTER).decide(version, fairness=REPORT_DUE_MISSING)
