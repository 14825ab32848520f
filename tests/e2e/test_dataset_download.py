"""Downloading a dataset version's content: the recorded bytes, checked against the recorded digest."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY

from mlledger.client import LedgerClient
from service.app import create_app
from service.bootstrap import Services

CONTENT = b"age,income,city\n30,1000.5,Oslo\n41,,Rome\n"
PROBLEM = "application/problem+json"


@pytest.fixture
def http(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as client:
        yield client


@pytest.fixture
def api(http: TestClient) -> LedgerClient:
    return LedgerClient(api_key=ADMIN_KEY, http=http)


def _content(http: TestClient, dataset_id: str, key: str = ADMIN_KEY) -> httpx.Response:
    response: httpx.Response = http.get(
        f"/v1/dataset-versions/{dataset_id}/content", headers={"Authorization": f"Bearer {key}"}
    )
    return response


def test_the_downloaded_bytes_are_the_uploaded_bytes_with_their_digest(api: LedgerClient, http: TestClient) -> None:
    written = api.upload_dataset("credit", CONTENT)

    response = _content(http, written.id)

    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-content-digest"] == "sha256:" + hashlib.sha256(CONTENT).hexdigest()


def test_a_caller_without_read_lineage_is_forbidden(api: LedgerClient, http: TestClient) -> None:
    written = api.upload_dataset("credit", CONTENT)
    predictor = api.create_principal("shop", ["predictor"])
    key = api.issue_api_key(predictor.id)

    response = _content(http, written.id, key)

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 403
    assert CONTENT not in response.content


def test_an_unknown_dataset_version_is_not_found(http: TestClient) -> None:
    response = _content(http, str(uuid.uuid4()))

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 404


def test_a_file_changed_on_disk_is_refused_not_served(api: LedgerClient, http: TestClient, services: Services) -> None:
    written = api.upload_dataset("credit", CONTENT)
    digest = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
    tampered = CONTENT.replace(b"Oslo", b"Rome")
    services.blobs.path_of(digest).write_bytes(tampered)

    response = _content(http, written.id)

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["title"] == "Stored file changed"
    assert digest in problem["detail"]
    assert tampered not in response.content
