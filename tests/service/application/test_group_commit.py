"""Group commit of every command on the real PostgreSQL: concurrent saves share a transaction,
each request stays all or nothing, and one bad request fails alone.

The writer is held on a first request by another connection that holds the
events table's lock, so the requests that arrive meanwhile queue up and form
one group when the lock is let go. Rows written by one transaction share its
``xmin``, which is how the tests see the grouping in the database itself.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from support.ledger import ADMIN_KEY, PG_URL, require_postgres

from domain.errors import PrincipalAlreadyExists, VersionConflict
from domain.integrity.ledger_key import KEYRING_ID
from domain.principal import Principal
from service.app import create_app
from service.application.group_commit import GroupCommitter, _Request, rounds
from service.bootstrap import Services

pytestmark = pytest.mark.postgres
ACTOR = "user:admin"


@pytest.fixture
def backend() -> str:
    """PostgreSQL only: the transaction grouping is read from its ``xmin`` column."""
    require_postgres()
    return "postgres"


@pytest.fixture
def committer(services: Services) -> Iterator[GroupCommitter]:
    committer = GroupCommitter(services.ledger)
    services.ledger.share_commits(committer)
    yield committer
    committer.stop()


class Call(threading.Thread):
    """A command run on a thread of its own (as a request thread of the API runs it)."""

    def __init__(self, command: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._command = command
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._command()
        except BaseException as exc:
            self.error = exc


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def writer_held(services: Services, committer: GroupCommitter) -> Iterator[None]:
    """Hold the events table's lock while a first command waits on it, so later ones queue behind it."""
    schema = services.settings.database_schema
    with psycopg.connect(PG_URL, autocommit=False) as conn:
        conn.execute(f'LOCK TABLE "{schema}".mlledger_events IN EXCLUSIVE MODE')
        first = Call(lambda: services.ledger.register_principal("first", "user", ["auditor"], actor=ACTOR))
        batches = committer.batches
        first.start()
        _wait_for(lambda: committer.batches == batches + 1, "the writer to take the first request")
        try:
            yield
        finally:
            conn.commit()
    first.join(10)
    assert first.error is None


def _registering(services: Services, name: str) -> Callable[[], Any]:
    return functools.partial(services.ledger.register_principal, name, "user", ["auditor"], actor=ACTOR)


def _transactions_of(services: Services, positions: list[int]) -> int:
    schema = services.settings.database_schema
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute(
            f'SELECT count(DISTINCT xmin::text) FROM "{schema}".mlledger_events WHERE notification_id = ANY(%s)',
            (positions,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _start_all(calls: list[Call], committer: GroupCommitter, queued_before: int) -> None:
    for call in calls:
        call.start()
    _wait_for(lambda: committer.requests == queued_before + len(calls), "every request to queue")


def test_concurrent_single_writes_share_one_transaction(services: Services, committer: GroupCommitter) -> None:
    names = [f"user-{i}" for i in range(8)]
    calls = [Call(_registering(services, name)) for name in names]

    with writer_held(services, committer):
        _start_all(calls, committer, queued_before=1)
    for call in calls:
        call.join(10)

    assert [call.error for call in calls] == [None] * len(calls)
    positions = sorted(call.result.position for call in calls)
    assert committer.transactions == 2  # the held first request, then the eight together
    assert _transactions_of(services, positions) == 1
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    for name, call in zip(names, calls, strict=True):
        assert services.ledger.get(call.result.id, Principal).name == name


def test_a_bad_request_in_a_group_fails_alone_and_the_others_are_recorded(
    services: Services, committer: GroupCommitter
) -> None:
    bob = services.ledger.register_principal("bob", "user", ["auditor"], actor=ACTOR)
    stale: Principal = services.ledger.get(bob.id, Principal)
    services.ledger.grant_role(bob.id, "approver", actor=ACTOR)  # version 2 is taken: `stale` lost the race
    stale.grant_role("operator", actor=ACTOR)
    queued = committer.requests
    good = [Call(_registering(services, name)) for name in "xyz"]
    bad = Call(lambda: services.ledger.save(stale))

    with writer_held(services, committer):
        _start_all([good[0], bad, *good[1:]], committer, queued_before=queued + 1)
    for call in [*good, bad]:
        call.join(10)

    assert isinstance(bad.error, VersionConflict)
    assert [call.error for call in good] == [None, None, None]
    assert sorted(services.ledger.get(bob.id, Principal).roles) == ["approver", "auditor"]
    assert [services.ledger.get(call.result.id, Principal).name for call in good] == ["x", "y", "z"]


def test_a_requests_own_events_are_recorded_together(services: Services, committer: GroupCommitter) -> None:
    queued = committer.requests
    several = Principal(name="several", kind="user", roles=["auditor"], actor=ACTOR)
    several.grant_role("approver", actor=ACTOR)
    several.grant_role("operator", actor=ACTOR)
    calls = [
        Call(lambda: services.ledger.save(several)),
        Call(lambda: services.ledger.register_principal("single", "user", ["auditor"], actor=ACTOR)),
    ]

    with writer_held(services, committer):
        _start_all(calls, committer, queued_before=queued + 1)
    for call in calls:
        call.join(10)

    recordings = calls[0].result
    assert [r.notification.originator_version for r in recordings] == [1, 2, 3]
    positions = [r.notification.id for r in recordings] + [calls[1].result.position]
    assert _transactions_of(services, positions) == 1
    assert sorted(services.ledger.get(several.id, Principal).roles) == ["approver", "auditor", "operator"]


def test_two_requests_on_one_aggregate_in_a_group_behave_as_if_one_came_after_the_other(
    services: Services, committer: GroupCommitter
) -> None:
    queued = committer.requests
    calls = [
        Call(lambda: services.ledger.register_principal("twice", "user", ["auditor"], actor=ACTOR)),
        Call(lambda: services.ledger.register_principal("twice", "user", ["approver"], actor=ACTOR)),
        Call(lambda: services.ledger.register_principal("other", "user", ["auditor"], actor=ACTOR)),
    ]

    with writer_held(services, committer):
        _start_all(calls, committer, queued_before=queued + 1)
    for call in calls:
        call.join(10)

    assert calls[0].error is None and calls[2].error is None
    assert isinstance(calls[1].error, PrincipalAlreadyExists)
    assert services.ledger.get(calls[0].result.id, Principal).roles == ["auditor"]
    assert _transactions_of(services, [calls[0].result.position, calls[2].result.position]) == 1


def test_rounds_keep_requests_on_one_aggregate_apart_and_in_order() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def request(*ids: uuid.UUID) -> _Request:
        made = _Request(items=[])
        made.__dict__["aggregate_ids"] = frozenset(ids)
        return made

    first, second, third, fourth = request(a), request(b), request(a, c), request(c)

    assert rounds([first, second, third, fourth]) == [[first, second], [third], [fourth]]


def test_a_keyring_change_has_a_round_of_its_own_between_the_requests_before_and_after_it() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()

    def request(*ids: uuid.UUID) -> _Request:
        made = _Request(items=[])
        made.__dict__["aggregate_ids"] = frozenset(ids)
        return made

    before, rotation, after, other = request(a), request(KEYRING_ID), request(b), request(a)

    assert rounds([before, rotation, after, other]) == [[before], [rotation], [after, other]]


def test_the_api_process_records_every_command_through_its_group_committer(services: Services) -> None:
    app = create_app(services.settings, run_projector=False, services=services)
    with TestClient(app) as client:
        committer = app.state.serving.committer
        before = committer.transactions
        answer = client.post(
            "/v1/code-versions",
            json={"repository": "https://git.example/repo", "commit": "abc1234"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert answer.status_code == 201, answer.text
        assert committer.transactions == before + 1
    assert int(answer.headers["X-Ledger-Position"]) == services.ledger.position()
