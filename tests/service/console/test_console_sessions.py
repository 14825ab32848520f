"""Console sessions live in the database: every API process (and a restarted
one) sees the sessions the others opened and closed; they expire when idle and
after their maximum age, at most ``max_sessions`` stay open, and the table never
holds a token."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY

from service.app import create_app
from service.bootstrap import Services
from service.console.sessions import SessionStore
from service.settings import Settings
from service.store.persistence import create_engine
from service.store.tables import console_sessions

DIGEST = "sha256:" + "0" * 64


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(services: Services, clock: Clock) -> SessionStore:
    """The sessions as one API process sees them."""
    return SessionStore(
        services.engine, services.writer_engine, idle_seconds=10, max_age_seconds=25, touch_seconds=0, clock=clock
    )


@pytest.fixture
def other_process(services: Services, settings: Settings, clock: Clock) -> Iterator[SessionStore]:
    """The same sessions seen through engines of their own, as another API process sees them."""
    engine, writer = create_engine(settings), create_engine(settings, immediate=True)
    yield SessionStore(engine, writer, idle_seconds=10, max_age_seconds=25, touch_seconds=0, clock=clock)
    engine.dispose()
    writer.dispose()


def _rows(services: Services) -> list[sa.Row[tuple[object, ...]]]:
    with services.engine.connect() as conn:
        return list(conn.execute(sa.select(console_sessions)).all())


def test_a_session_opened_by_one_process_is_found_by_another(store: SessionStore, other_process: SessionStore) -> None:
    token, opened = store.open("p-1", DIGEST)

    found = other_process.find(token)

    assert found is not None
    assert (found.principal_id, found.key_digest, found.csrf_token) == ("p-1", DIGEST, opened.csrf_token)
    assert other_process.find(token + "x") is None


def test_signing_out_in_one_process_ends_the_session_in_the_other(
    store: SessionStore, other_process: SessionStore
) -> None:
    token, _ = store.open("p-1", DIGEST)

    other_process.close(token)

    assert store.find(token) is None


def test_closing_every_session_of_a_key_reaches_every_process(store: SessionStore, other_process: SessionStore) -> None:
    first, _ = store.open("p-1", DIGEST)
    second, _ = other_process.open("p-1", DIGEST)
    kept, _ = store.open("p-2", "sha256:" + "1" * 64)

    assert other_process.close_all_of(DIGEST) == 2

    assert store.find(first) is None and store.find(second) is None
    assert store.find(kept) is not None


def test_sessions_expire_when_idle_and_after_their_maximum_age(store: SessionStore, clock: Clock) -> None:
    start = clock.now
    token, _ = store.open("p", DIGEST)

    clock.now = start + 9
    assert store.find(token) is not None
    clock.now = start + 18
    assert store.find(token) is not None
    clock.now = start + 26
    assert store.find(token) is None
    idle, _ = store.open("p", DIGEST)
    clock.now = start + 37
    assert store.find(idle) is None


def test_an_idle_session_ends_at_most_idle_seconds_after_its_last_request(services: Services, clock: Clock) -> None:
    store = SessionStore(services.engine, services.writer_engine, idle_seconds=10, touch_seconds=5, clock=clock)
    start = clock.now
    token, _ = store.open("p", DIGEST)

    clock.now = start + 4  # recent enough: not recorded
    assert store.find(token) is not None
    assert [row.last_seen for row in _rows(services)] == [start]
    clock.now = start + 9  # recorded
    assert store.find(token) is not None
    assert [row.last_seen for row in _rows(services)] == [start + 9]
    clock.now = start + 13  # not recorded: the last request is 4 s later than the table says
    assert store.find(token) is not None
    clock.now = start + 19.5  # 6.5 s after the last request, more than idle - touch

    assert store.find(token) is None
    assert _rows(services) == []


def test_expired_sessions_are_purged_when_another_opens(services: Services, store: SessionStore, clock: Clock) -> None:
    store.open("p-1", DIGEST)
    clock.now += 11

    store.open("p-2", DIGEST)

    assert [row.principal_id for row in _rows(services)] == ["p-2"]
    assert len(store) == 1


def test_opening_beyond_the_cap_ends_the_least_recently_seen_session(services: Services, clock: Clock) -> None:
    store = SessionStore(services.engine, services.writer_engine, max_sessions=2, touch_seconds=0, clock=clock)
    first, _ = store.open("p-1", DIGEST)
    clock.now += 1
    second, _ = store.open("p-2", DIGEST)
    clock.now += 1
    assert store.find(first) is not None
    clock.now += 1

    third, _ = store.open("p-3", DIGEST)

    assert store.find(second) is None
    assert store.find(first) is not None and store.find(third) is not None
    assert len(store) == 2


def test_the_table_holds_no_token(services: Services, store: SessionStore) -> None:
    token, session = store.open("p-1", DIGEST)

    (row,) = _rows(services)

    assert row.slot == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in row)
    assert row.csrf_token == session.csrf_token


def test_a_touch_interval_not_below_the_idle_time_is_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="touch_seconds"):
        SessionStore(services.engine, services.writer_engine, idle_seconds=30, touch_seconds=30)


def _sign_in(http: TestClient) -> None:
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/console/login").text)
    assert found is not None
    response = http.post("/console/login", data={"api_key": ADMIN_KEY, "csrf_token": found.group(1)})
    assert response.status_code == 303, response.text


def test_a_browser_signed_in_on_one_api_process_stays_signed_in_on_another(
    services: Services, settings: Settings
) -> None:
    first_app = create_app(settings, run_projector=False, services=services)
    second_app = create_app(settings, run_projector=False)  # opens services of its own
    with (
        TestClient(first_app, follow_redirects=False) as first,
        TestClient(second_app, follow_redirects=False) as second,
    ):
        _sign_in(first)
        second.cookies.set("mll_console", first.cookies.get("mll_console") or "", path="/console")

        page = second.get("/console/ledger")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        assert second.post("/console/logout", data={"csrf_token": csrf.group(1)}).status_code == 303

        after = first.get("/console/ledger")
    assert after.status_code == 303
    assert after.headers["location"] == "/console/login?next=%2Fconsole%2Fledger&message=expired"
