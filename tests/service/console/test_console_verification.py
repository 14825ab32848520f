"""The console's ledger verification lives in the database: every API process
(and a restarted one) sees the verification another started and its result,
only one runs at a time across processes, its process keeps a heartbeat, and a
running verification whose process stopped reporting is shown as abandoned and
blocks nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY

from service.app import create_app
from service.bootstrap import Services
from service.console.verification import VerificationJob
from service.settings import Settings
from service.store.persistence import create_engine
from service.store.tables import console_verifications

WAIT_SECONDS = 120


@pytest.fixture
def job(services: Services) -> VerificationJob:
    """The verification as one API process sees it."""
    return VerificationJob(services.engine, services.writer_engine)


@pytest.fixture
def other_process(settings: Settings) -> Iterator[VerificationJob]:
    """The verification seen through engines of their own, as another API process sees it."""
    engine, writer = create_engine(settings), create_engine(settings, immediate=True)
    yield VerificationJob(engine, writer)
    engine.dispose()
    writer.dispose()


def _abandoned_row(services: Services) -> None:
    """A verification whose process crashed: never finished, its heartbeat long past."""
    long_ago = time.time() - 3600
    with services.writer_engine.begin() as conn:
        conn.execute(
            console_verifications.insert().values(
                started_at=long_ago,
                started_by="gone",
                owner="crashed-host-4242",
                heartbeat_at=long_ago + 5,
            )
        )


def _rows(services: Services) -> list[sa.Row[tuple[object, ...]]]:
    with services.engine.connect() as conn:
        return list(conn.execute(sa.select(console_verifications).order_by(console_verifications.c.id)).all())


def test_a_verification_started_by_one_process_runs_in_the_other_and_its_result_reaches_both(
    settings: Settings, job: VerificationJob, other_process: VerificationJob
) -> None:
    assert job.start(settings, "audrey")

    running = other_process.status().running
    job.wait(WAIT_SECONDS)

    assert running is not None and running.started_by == "audrey" and running.owner == job.owner
    for seen in (job.status(), other_process.status()):
        assert seen.running is None and seen.abandoned is None
        assert seen.last is not None and seen.last.started_by == "audrey"
        assert seen.last.ok, seen.last.findings
        assert seen.last.events > 0 and seen.last.keys == 1


def test_a_second_start_while_one_runs_is_refused_in_every_process(
    services: Services, settings: Settings, job: VerificationJob, other_process: VerificationJob
) -> None:
    assert job.start(settings, "audrey")

    refused_elsewhere = other_process.start(settings, "admin")
    refused_here = job.start(settings, "admin")
    job.wait(WAIT_SECONDS)

    assert not refused_elsewhere and not refused_here
    assert [row.started_by for row in _rows(services)] == ["audrey"]
    assert other_process.start(settings, "admin")  # once it is done, the next may start
    other_process.wait(WAIT_SECONDS)
    assert other_process.status().last is not None
    assert [row.started_by for row in _rows(services)] == ["audrey", "admin"]


def test_the_starting_process_refreshes_the_heartbeat_while_it_waits(services: Services, settings: Settings) -> None:
    job = VerificationJob(services.engine, services.writer_engine, heartbeat_seconds=0.05, stale_seconds=1)

    assert job.start(settings, "audrey")
    job.wait(WAIT_SECONDS)

    (row,) = _rows(services)
    assert row.heartbeat_at > row.started_at
    assert row.finished_at is not None and row.ok


def test_a_verification_whose_process_stopped_reporting_is_abandoned_and_blocks_nothing(
    services: Services, settings: Settings, job: VerificationJob
) -> None:
    _abandoned_row(services)

    abandoned = job.status()
    started = job.start(settings, "audrey")
    job.wait(WAIT_SECONDS)

    assert abandoned.running is None and abandoned.last is None
    assert abandoned.abandoned is not None and abandoned.abandoned.owner == "crashed-host-4242"
    assert started
    after = job.status()
    assert after.abandoned is None and after.running is None
    assert after.last is not None and after.last.started_by == "audrey" and after.last.ok


def test_timings_that_would_call_a_reporting_process_abandoned_are_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        VerificationJob(services.engine, services.writer_engine, heartbeat_seconds=60, stale_seconds=60)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def _verify_button(page: str) -> str:
    found = re.search(r"<button[^>]*>Verify ledger now</button>", page)
    assert found is not None
    return found.group(0)


@pytest.fixture
def two_workers(services: Services, settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """One browser session on two API processes over the same database."""
    first_app = create_app(settings, run_projector=False, services=services)
    second_app = create_app(settings, run_projector=False)  # opens services of its own
    with (
        TestClient(first_app, follow_redirects=False) as first,
        TestClient(second_app, follow_redirects=False) as second,
    ):
        response = first.post(
            "/console/login",
            data={
                "api_key": ADMIN_KEY,
                "csrf_token": _csrf(first.get("/console/login").text),
            },
        )
        assert response.status_code == 303, response.text
        second.cookies.set("mll_console", first.cookies.get("mll_console") or "", path="/console")
        yield first, second


def test_every_api_process_shows_the_running_verification_and_its_result(
    two_workers: tuple[TestClient, TestClient],
) -> None:
    first, second = two_workers
    csrf = _csrf(first.get("/console/ledger").text)

    started = first.post("/console/ledger/verify", data={"csrf_token": csrf})
    running = second.get("/console/ledger").text
    refused = second.post("/console/ledger/verify", data={"csrf_token": csrf})
    first.app.state.console.verification.wait(WAIT_SECONDS)  # type: ignore[attr-defined]
    pages = [client.get("/console/ledger").text for client in (first, second)]

    assert started.status_code == 303 and refused.status_code == 303
    assert "Verifying the whole ledger… started" in running and "by admin" in running
    assert "disabled" in _verify_button(running)
    assert 'http-equiv="refresh"' in running
    for page in pages:
        assert '<div class="notice ok" id="verify-result"><strong>OK</strong>' in page
        assert "Verifying the whole ledger" not in page and "disabled" not in _verify_button(page)


def test_the_page_shows_an_abandoned_verification_and_lets_a_new_one_start(
    services: Services, two_workers: tuple[TestClient, TestClient]
) -> None:
    first, second = two_workers
    _abandoned_row(services)

    abandoned = second.get("/console/ledger").text
    started = second.post("/console/ledger/verify", data={"csrf_token": _csrf(abandoned)})
    second.app.state.console.verification.wait(WAIT_SECONDS)  # type: ignore[attr-defined]
    after = first.get("/console/ledger").text

    assert '<div class="notice bad" id="verify-abandoned"><strong>ABANDONED</strong>' in abandoned
    assert "by gone" in abandoned and "crashed-host-4242" in abandoned
    assert "disabled" not in _verify_button(abandoned)
    assert started.status_code == 303
    assert "ABANDONED" not in after
    assert '<div class="notice ok" id="verify-result"><strong>OK</strong>' in after
