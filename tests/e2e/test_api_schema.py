"""Property-based checks of the whole API against its OpenAPI document
(schemathesis, bounded examples): no 5xx, and every response, errors included,
conforms to the documented status codes, content types and schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.ledger import ADMIN_KEY, make_settings

from service.app import create_app
from service.bootstrap import Services, open_services
from service.ops.projector import ProjectorThread
from service.serving.runtime import open_serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@asynccontextmanager
async def already_open(_: object) -> AsyncIterator[None]:
    yield  # the module fixture below gives the app its services; nothing opens ./data


APP = create_app(run_projector=False)
APP.router.lifespan_context = already_open
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module", autouse=True)
def ledger_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = open_services(make_settings("sqlite", Path(tmp_path_factory.mktemp("schema")) / "data"), migrate=True)
    APP.state.services = services
    APP.state.serving = open_serving(services)
    projector = ProjectorThread(services)
    projector.start()
    yield services
    projector.stop()
    APP.state.serving.close()
    services.close()


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_the_api_keeps_its_documented_contract(operation: schemathesis.APIOperation) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS)

    check()


def test_every_schema_of_the_document_has_a_name_of_its_own() -> None:
    """Two models of one name get module-path names (``service__api__...``) that clients would see."""
    names = list(APP.openapi()["components"]["schemas"])
    assert [name for name in names if "__" in name] == []
    assert len(names) == len(set(names))
