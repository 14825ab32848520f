"""Domain errors read over HTTP as one table says: status by class, inherited
along the MRO; a named rule answers exactly as the error it refines."""

from __future__ import annotations

import json

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.ledger import PG_URL, require_postgres

from domain.errors import (
    ApprovalRequired,
    DeploymentStopped,
    Forbidden,
    InvalidPayload,
    LedgerError,
    NotFound,
    RuleViolated,
    SeparationOfDutiesViolated,
    TamperedEvent,
)
from service.api import problems
from service.api.errors import STATUS, http_status
from service.store.blobs import BlobTampered


class NamedRule(RuleViolated):
    """A rule named for callers to branch on, without a problem type of its own."""

    names_a_case = True


class OwnProblem(RuleViolated):
    """A rule with a problem type and title of its own."""

    title = "Own problem"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LedgerError, 400),
        (InvalidPayload, 422),
        (NotFound, 404),
        (RuleViolated, 409),
        (Forbidden, 403),
        (ApprovalRequired, 409),
        (DeploymentStopped, 503),
        (TamperedEvent, 500),
    ],
)
def test_each_listed_error_has_its_status(error: type[LedgerError], status: int) -> None:
    assert http_status(error(detail="x")) == status


def test_a_subclass_that_is_not_listed_takes_its_bases_status() -> None:
    assert SeparationOfDutiesViolated not in STATUS

    assert http_status(SeparationOfDutiesViolated("x")) == 403


def test_a_listed_subclass_overrides_its_bases_status() -> None:
    assert http_status(BlobTampered("x")) == 409


def test_an_error_the_table_has_never_heard_of_answers_as_its_nearest_listed_base() -> None:
    assert http_status(NamedRule("x")) == http_status(RuleViolated("x"))


def _answer(error: LedgerError) -> tuple[int, bytes]:
    app = FastAPI()
    problems.install(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    with TestClient(app) as client:
        response = client.get("/fail")
    return response.status_code, response.content


def test_a_named_rule_answers_byte_for_byte_as_the_rule_it_refines() -> None:
    named = _answer(NamedRule("v2 is already the champion", field="version"))

    assert named == _answer(RuleViolated("v2 is already the champion", field="version"))


def test_a_problem_answers_with_status_type_and_title() -> None:
    status, body = _answer(OwnProblem("no"))

    assert status == 409
    assert json.loads(body) == {
        "type": "https://mlledger.dev/problems/own-problem",
        "title": "Own problem",
        "status": 409,
        "detail": "no",
    }


def _answer_unexpected(error: BaseException) -> tuple[int, dict[str, object], str | None]:
    app = FastAPI()
    problems.install(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fail")
    return response.status_code, response.json(), response.headers.get("retry-after")


def test_a_database_connection_terminated_under_a_request_answers_503_with_retry_after() -> None:
    require_postgres()
    victim = psycopg.connect(PG_URL, autocommit=True)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError) as lost:
        victim.execute("SELECT 1")

    status, body, retry_after = _answer_unexpected(lost.value)

    assert (status, retry_after) == (503, "1")
    assert body["type"] == "https://mlledger.dev/problems/database-unavailable"
    assert "retry" in str(body["detail"])


def test_any_other_unexpected_error_is_a_500_that_says_nothing_of_its_cause() -> None:
    status, body, retry_after = _answer_unexpected(RuntimeError("secret detail"))

    assert (status, retry_after) == (500, None)
    assert "secret" not in json.dumps(body)
