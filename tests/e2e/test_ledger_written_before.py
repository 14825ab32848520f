"""A ledger written by an earlier build verifies, reconstructs and serves with this one.

``tests/support/written_before/ledger.tar.gz`` was written by the build before
service/ was regrouped (see the README beside it): a runner-trained credit
model, two signed approvals, a champion, four predictions (the first of a data
subject, its input encrypted), an outcome and a checkpoint. Stored events are
read by topic and aggregate type name, keys and blobs by path; none of that may
depend on where a class lives.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, make_settings, run_cli
from support.serving_world import credit_rows, features_of

from service.app import create_app
from service.bootstrap import open_services
from service.settings import Settings

ARCHIVE = Path(__file__).resolve().parents[1] / "support" / "written_before" / "ledger.tar.gz"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROWS = [features_of(row) for row in credit_rows(4, seed=11)]  # the inputs the earlier build served


@pytest.fixture
def written_before(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(data_dir, filter="data")
    return make_settings("sqlite", data_dir)


@pytest.fixture
def http(written_before: Settings) -> Iterator[TestClient]:
    services = open_services(written_before, migrate=True)
    try:
        with TestClient(create_app(written_before, run_workers=False, services=services)) as client:
            yield client
    finally:
        services.close()


def test_a_ledger_written_before_verifies(written_before: Settings) -> None:
    done = run_cli(written_before, "verify")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout


def test_its_decisions_reconstruct_with_the_subjects_input_decrypted(http: TestClient) -> None:
    served = http.get("/v1/predictions/written-before-0", params={"model": "credit"}, headers=HEADERS)
    with_outcome = http.get("/v1/predictions/written-before-1", params={"model": "credit"}, headers=HEADERS)

    assert served.status_code == 200, served.text
    assert (served.json()["subject_id"], served.json()["input"]) == ("subject-0", ROWS[0])
    assert (with_outcome.json()["has_outcome"], with_outcome.json()["outcome"]) == (True, 1)


def test_its_champion_serves_the_answer_it_gave_before_and_the_ledger_still_verifies(
    http: TestClient, written_before: Settings
) -> None:
    before = http.get("/v1/predictions/written-before-2", params={"model": "credit"}, headers=HEADERS).json()

    now = http.post(
        "/v1/models/credit/predict", json={"input": ROWS[2], "request_id": "written-after-2"}, headers=HEADERS
    )

    assert now.status_code == 200, now.text
    assert (now.json()["version"], now.json()["output"]) == (before["version"], before["output"])
    assert now.json()["reason_codes"] == before["reason_codes"]
    done = run_cli(written_before, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
