"""The audit trail on SQLite and PostgreSQL: one row per event, filters that each
narrow to exactly the matching events (checked against the raw log), cursor
pages that see every event once even while the log grows, and identical rows
after a rebuild."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from domain.approval import approval_statement, sign_statement
from domain.errors import InvalidPayload
from domain.integrity.canonical import canonical_json
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import SealedEvent, format_timestamp, parse_timestamp
from domain.principal import Principal, possession_message
from projections import audit_trail
from projections.audit_queries import AuditEvent, audit_events
from service.bootstrap import Services

ADMIN = "user:admin"
SPEC = {"entrypoint": "credit.train:main"}


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Logged:
    """An event as the raw log holds it."""

    notification_id: int
    aggregate_id: str
    aggregate_type: str
    topic: str
    actor: str
    recorded_at: str
    payload: dict[str, Any]
    hash: str


def raw_log(services: Services) -> list[Logged]:
    """Every event straight from the event store, in notification order."""
    out = []
    for n in services.ledger.recorder.select_notifications(1, 100_000):
        sealed = SealedEvent.from_record(n.state)
        env = sealed.envelope_fields()
        out.append(
            Logged(
                n.id,
                str(n.originator_id),
                env["aggregate_type"],
                n.topic,
                env["actor"],
                env["recorded_at"],
                env["payload"],
                sealed.hash,
            )
        )
    return out


def approve(services: Services, model: str, number: int, who: str, signer: Signer, kid: str) -> None:
    version = services.ledger.model_version(model, number)
    statement = approval_statement(
        model_version_id=str(version.id),
        model_name=model,
        version=number,
        artifact_digest=version.artifact_digest,
        run_digest=version.run_digest,
        decision="approve",
        reason="reviewed",
        approver=who,
        signed_at="2026-11-22T10:00:00Z",
    )
    services.ledger.decide(
        model_name=model,
        number=number,
        approver_id=who,
        key_id=kid,
        statement=statement,
        signature=sign_statement(statement, signer.sign),
        actor=who,
    )


def governed_model(services: Services, model: str, alice: str, bob: str, carol: tuple[str, Signer, str]) -> None:
    """A run, a version of ``model`` registered by bob, approved by carol, deployed."""
    ledger = services.ledger
    run_id = ledger.start_run(
        name=f"{model}-run",
        mode="client",
        pipeline="credit-py",
        pipeline_version=None,
        dataset_version_ids=[],
        code_version_id=None,
        params={"lr": 0.1},
        seed=1,
        device="cpu",
        actor=alice,
    ).id
    ledger.log_metrics(run_id, [{"key": "auc", "value": 0.9, "step": 1}], actor=alice)
    ledger.record_artifact(run_id, "model.pt", digest(model), 10, "application/octet-stream", actor=alice)
    ledger.finish_run(run_id, "succeeded", None, actor=alice)
    ledger.register_model_version(
        model_name=model,
        run_id=run_id,
        artifact_name="model.pt",
        input_schema=[],
        policy={"required_approvals": 1},
        actor=bob,
    )
    approve(services, model, 1, *carol)
    ledger.deploy(model_name=model, action="champion", number=1, share=None, reason="first", actor=bob)
    ledger.set_policy(model, {"required_approvals": 1, "rejection_blocks": False}, actor=bob)


@pytest.fixture
def people(services: Services) -> dict[str, Any]:
    """alice trains, bob registers and deploys, carol approves; two models governed; all projected."""
    ledger = services.ledger
    alice = ledger.register_principal("alice", "user", ["data_scientist"], actor=ADMIN).id
    bob = ledger.register_principal("bob", "user", ["operator"], actor=ADMIN).id
    carol = ledger.register_principal("carol", "user", ["approver"], actor=ADMIN).id
    signer = Signer.generate()
    proof = signer.sign(possession_message(carol, signer.key_id))
    kid, _ = ledger.register_signing_key(carol, public_key_pem(signer.public_key), proof, actor=carol)
    ledger.add_pipeline_spec(name="credit-py", kind="python", spec=SPEC, actor=alice)
    for model in ("credit", "fraud"):
        governed_model(services, model, alice, bob, (carol, signer, kid))
    services.runner.catch_up()
    return {"alice": alice, "bob": bob, "carol": carol}


def query(services: Services, **filters: Any) -> list[AuditEvent]:
    """Every page of a filtered query, walked with the cursor."""
    events: list[AuditEvent] = []
    after = None
    with services.engine.connect() as conn:
        while True:
            page = audit_events(conn, after=after, limit=7, **filters)
            events += page.events
            if page.next_after is None:
                return events
            after = page.next_after


def ids(events: list[Any]) -> list[int]:
    return [e.notification_id for e in events]


# -- rows -------------------------------------------------------------------------------


def test_every_event_has_one_row_with_its_type_actor_time_and_hash(services: Services, people: dict[str, Any]) -> None:
    logged = raw_log(services)

    rows = query(services)

    assert ids(rows) == ids(logged)
    assert [(r.aggregate_id, r.aggregate_type, r.topic, r.actor, r.recorded_at, r.hash) for r in rows] == [
        (e.aggregate_id, e.aggregate_type, e.topic, e.actor, e.recorded_at, e.hash) for e in logged
    ]
    assert all(r.event_type == r.topic.split(".")[-2] for r in rows)
    assert [r.summary for r in rows] == [e.payload for e in logged]


def test_model_events_carry_the_model_name_even_when_the_payload_omits_it(
    services: Services, people: dict[str, Any]
) -> None:
    logged = raw_log(services)
    first_events = [
        e
        for e in logged
        if e.aggregate_type in ("Model", "ModelVersion", "Deployment") and e.payload.keys() & {"name", "model_name"}
    ]
    names = {e.aggregate_id: e.payload.get("name") or e.payload.get("model_name") for e in first_events}
    expected = [e for e in logged if names.get(e.aggregate_id) == "credit"]

    rows = query(services, model="credit")

    assert ids(rows) == ids(expected)
    assert {r.event_type for r in rows} == {
        "Registered",
        "Created",
        "VersionAdded",
        "ApprovalGranted",
        "ChampionSet",
        "PolicyChanged",
    }
    assert all(r.model_name is None for r in query(services, actor=ADMIN))


def test_a_summary_is_the_canonical_json_of_the_payload(services: Services, people: dict[str, Any]) -> None:
    logged = raw_log(services)
    t = audit_trail.audit_events

    with services.engine.connect() as conn:
        stored = conn.execute(sa.select(t.c.summary).order_by(t.c.notification_id)).scalars().all()

    assert stored == [canonical_json(e.payload).decode() for e in logged]


def test_a_large_payload_field_is_kept_as_its_digest(services: Services) -> None:
    datasheet = {"motivation": "x" * 3000, "uses": "scoring"}
    written = services.ledger.register_dataset_version(
        name="big",
        digest=digest("big"),
        size=1,
        format="csv",
        schema=[],
        row_count=1,
        datasheet=datasheet,
        source="here",
        actor=ADMIN,
    )
    services.runner.catch_up()

    (row,) = query(services, aggregate_id=written.id)

    assert row.summary["datasheet"] == "sha256:" + hashlib.sha256(canonical_json(datasheet)).hexdigest()
    assert row.summary["source"] == "here" and row.summary["schema"] == []


# -- filters ----------------------------------------------------------------------------


def test_each_filter_narrows_to_exactly_the_matching_events(services: Services, people: dict[str, Any]) -> None:
    logged = raw_log(services)
    a_version = next(e for e in logged if e.topic == "mlledger.modelversion.Registered.v1")
    middle = logged[len(logged) // 2].recorded_at
    late = logged[3 * len(logged) // 4].recorded_at

    by_actor = query(services, actor=people["carol"])
    by_aggregate = query(services, aggregate_id=a_version.aggregate_id)
    by_short_type = query(services, event_type="Registered")
    by_topic = query(services, event_type="mlledger.modelversion.Registered.v1")
    in_window = query(services, since=middle, until=late)
    combined = query(services, actor=people["bob"], model="fraud", event_type="ChampionSet")

    assert ids(by_actor) == ids([e for e in logged if e.actor == people["carol"]]) != []
    assert ids(by_aggregate) == ids([e for e in logged if e.aggregate_id == a_version.aggregate_id])
    assert {r.event_type for r in by_aggregate} == {"Registered", "ApprovalGranted"}
    assert ids(by_short_type) == ids([e for e in logged if e.topic.endswith(".Registered.v1")])
    assert {r.aggregate_type for r in by_short_type} >= {"Principal", "ModelVersion"}
    assert ids(by_topic) == ids([e for e in logged if e.topic == "mlledger.modelversion.Registered.v1"])
    assert len(by_topic) == 2
    assert ids(in_window) == ids([e for e in logged if middle <= e.recorded_at < late]) != []
    assert len(combined) == 1 and combined[0].model_name == "fraud"


def test_a_time_filter_accepts_any_offset_and_refuses_nonsense(services: Services, people: dict[str, Any]) -> None:
    logged = raw_log(services)
    middle = logged[len(logged) // 2].recorded_at
    same_moment = middle.replace("Z", "+00:00")

    assert ids(query(services, since=same_moment)) == ids([e for e in logged if e.recorded_at >= middle])
    with services.engine.connect() as conn, pytest.raises(InvalidPayload):
        audit_events(conn, since="last tuesday")


def out_of_order(services: Services) -> list[str]:
    """Principals whose events are stored in a different order than their times; projected."""
    created = []
    for name in ("p0", "p1", "p2", "p3", "p4"):
        created.append(Principal(name=name, kind="user", roles=[], actor=ADMIN))
        time.sleep(0.002)
    for index in (3, 0, 4, 1, 2):  # stored (and projected, one by one) out of time order
        services.ledger.save(created[index])
        services.runner.catch_up()
    return [str(p.id) for p in created]


@pytest.mark.parametrize("block", [1, 2, 1024])
def test_time_windows_are_exact_when_times_and_ids_disagree(
    services: Services, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_trail, "TIME_BLOCK", block)
    out_of_order(services)
    logged = raw_log(services)
    times = sorted({e.recorded_at for e in logged})
    step = timedelta(microseconds=1)
    edges = sorted({t for x in times for t in (x, format_timestamp(parse_timestamp(x) + step))})

    wrong = [
        (since, until)
        for since in edges
        for until in edges
        if ids(query(services, since=since, until=until)) != ids([e for e in logged if since <= e.recorded_at < until])
    ]

    by_time = sorted(logged, key=lambda e: e.recorded_at)
    assert ids(logged) != ids(by_time)
    assert wrong == []


def time_blocks(services: Services) -> list[tuple[int, str, str]]:
    t = audit_trail.audit_time_blocks
    with services.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.block, t.c.high_watermark, t.c.low_watermark).order_by(t.c.block))
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("block", [1, 2, 3])
def test_block_watermarks_bound_every_earlier_and_later_time_and_equal_a_rebuild(
    services: Services, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_trail, "TIME_BLOCK", block)
    out_of_order(services)  # projected one event per batch
    t = audit_trail.audit_events
    with services.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.notification_id, t.c.recorded_at).order_by(t.c.notification_id)).all()

    expected = [
        (
            b,
            max(at for nid, at in rows if nid < (b + 1) * block),
            min(at for nid, at in rows if nid >= b * block),
        )
        for b in sorted({nid // block for nid, _ in rows})
    ]
    incremental = time_blocks(services)
    services.runner.rebuild("audit_trail")  # every event in one batch

    assert incremental == expected
    assert time_blocks(services) == expected
    assert any(low < high for _, high, low in expected[:-1])  # the times disagree with the ids across blocks


@pytest.mark.parametrize("limit", [0, 1001])
def test_a_page_size_outside_1_to_1000_is_refused(services: Services, limit: int) -> None:
    with services.engine.connect() as conn, pytest.raises(InvalidPayload) as raised:
        audit_events(conn, limit=limit)

    assert raised.value.field == "limit"


# -- pagination and rebuild -------------------------------------------------------------------


def test_cursor_pages_see_every_event_once_in_order_while_the_log_grows(
    services: Services, people: dict[str, Any]
) -> None:
    new_roles = iter(["auditor", "regulator", "predictor", "operator", "admin"])
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        with services.engine.connect() as conn:
            page = audit_events(conn, after=after, limit=4)
        seen += ids(page.events)
        pages += 1
        role = next(new_roles, None)
        if role is not None:  # the log grows between the first pages
            services.ledger.grant_role(people["alice"], role, actor=ADMIN)
            services.runner.catch_up()
        if page.next_after is None:
            break
        after = page.next_after

    assert seen == ids(raw_log(services))
    assert len(seen) == len(set(seen))
    assert pages > 5


def test_a_rebuild_reproduces_every_audit_row(services: Services, people: dict[str, Any]) -> None:
    out_of_order(services)  # projected event by event, rebuilt in one batch
    tables = audit_trail.AuditTrail.tables
    with services.engine.connect() as conn:
        before = {t.name: conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all() for t in tables}

    services.runner.rebuild("audit_trail")

    with services.engine.connect() as conn:
        after = {t.name: conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all() for t in tables}
    assert after == before
    assert len(before["audit_aggregate_models"]) == 6  # two models, two versions, two deployments
