"""The registry read model on SQLite and PostgreSQL: rows equal what the commands
recorded, approval states follow the model's policy, a rebuild reproduces every
row, and the lineage and champion-at-a-moment questions are answered from it."""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from domain.approval import approval_statement, sign_statement
from domain.errors import InvalidPayload
from domain.integrity.keys import Signer, public_key_pem
from domain.integrity.sealing import format_timestamp, parse_timestamp
from domain.principal import possession_message
from projections import audit_queries as a
from projections import registry as r
from projections import registry_queries as q
from service.bootstrap import Services

ADMIN = "user:admin"
SPEC = {
    "features": ["age", "income"],
    "target": "approved",
    "task": "classification",
    "estimator": "sklearn.ensemble.RandomForestClassifier",
    "params_schema": {"n_estimators": {"type": "int", "default": 100}, "max_depth": {"type": "int"}},
}


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class World:
    """A small governed ledger: people, data, code, a pipeline, runs, a model with versions."""

    services: Services
    people: dict[str, str] = field(default_factory=dict)
    signers: dict[str, tuple[Signer, str]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    code_id: str = ""
    runs: list[str] = field(default_factory=list)

    @property
    def ledger(self) -> Any:
        return self.services.ledger

    def person(self, name: str, roles: list[str], signs: bool = False) -> str:
        pid = self.ledger.register_principal(name, "user", roles, actor=ADMIN).id
        self.people[name] = pid
        if signs:
            signer = Signer.generate()
            proof = signer.sign(possession_message(pid, signer.key_id))
            kid, _ = self.ledger.register_signing_key(pid, public_key_pem(signer.public_key), proof, actor=pid)
            self.signers[name] = (signer, kid)
        return str(pid)

    def trained_run(self, name: str, auc: list[float], actor: str) -> str:
        ledger = self.ledger
        run_id = ledger.start_run(
            name=name,
            mode="client",
            pipeline="credit-rf",
            pipeline_version=1,
            dataset_version_ids=self.datasets,
            code_version_id=self.code_id,
            params={"max_depth": 4},
            seed=7,
            device="cpu",
            actor=actor,
        ).id
        ledger.log_params(run_id, {"features": "all"}, actor=actor)
        ledger.log_metrics(run_id, [{"key": "auc", "value": v, "step": s} for s, v in enumerate(auc)], actor=actor)
        ledger.log_metrics(run_id, [{"key": "loss", "value": 0.5, "step": 0, "timestamp": "t0"}], actor=actor)
        ledger.record_artifact(run_id, "model.pkl", digest(name), 1234, "application/octet-stream", actor=actor)
        ledger.finish_run(run_id, "succeeded", None, actor=actor)
        self.runs.append(run_id)
        return str(run_id)

    def decide(self, who: str, model: str, number: int, decision: str = "approve") -> None:
        version = self.ledger.model_version(model, number)
        signer, kid = self.signers[who]
        statement = approval_statement(
            model_version_id=str(version.id),
            model_name=model,
            version=number,
            artifact_digest=version.artifact_digest,
            run_digest=version.run_digest,
            decision=decision,
            reason=f"{who} reviewed it",
            approver=self.people[who],
            signed_at="2026-11-22T10:00:00Z",
        )
        self.ledger.decide(
            model_name=model,
            number=number,
            approver_id=self.people[who],
            key_id=kid,
            statement=statement,
            signature=sign_statement(statement, signer.sign),
            actor=self.people[who],
        )

    def deploy(self, action: str, number: int | None = None, share: float | None = None, model: str = "credit") -> None:
        self.ledger.deploy(
            model_name=model,
            action=action,
            number=number,
            share=share,
            reason=f"{action} it",
            actor=self.people["olga"],
        )


def build_world(services: Services) -> World:
    """Everything from people to a retired deployment, projected."""
    world = World(services)
    ledger = services.ledger
    alice = world.person("alice", ["data_scientist"])
    bob = world.person("bob", ["data_scientist"])
    for approver in ("carol", "dave"):
        world.person(approver, ["approver"], signs=True)
    world.person("olga", ["operator"])
    ledger.grant_role(alice, "auditor", actor=ADMIN)
    ledger.revoke_role(alice, "auditor", actor=ADMIN)
    key_id = ledger.issue_api_key(alice, "mll_secret-token", "laptop", actor=ADMIN).id
    ledger.revoke_api_key(key_id, "lost", actor=ADMIN)
    ledger.deactivate_principal(world.person("erin", ["approver"]), "left", actor=ADMIN)
    for number in (1, 2):
        world.datasets.append(
            ledger.register_dataset_version(
                name="credit",
                digest=digest(f"data{number}"),
                size=1000 * number,
                format="csv",
                schema=[{"name": "age", "type": "int"}],
                row_count=10 * number,
                datasheet={"motivation": "credit scoring", "pii_columns": ["age"]},
                source=f"s3://d/{number}.csv",
                actor=alice,
            ).id
        )
    ledger.deprecate_dataset_version(world.datasets[0], "superseded", actor=alice)
    world.code_id = ledger.register_code_version(
        repository="git@example.com:credit.git",
        commit="abcdef1",
        archive_digest=None,
        entrypoint="credit.train:main",
        actor=alice,
    ).id
    ledger.add_pipeline_spec(name="credit-rf", kind="sklearn", spec=SPEC, actor=alice)
    ledger.add_pipeline_spec(name="credit-rf", kind="sklearn", spec={**SPEC, "features": ["age"]}, actor=alice)
    for index, final_auc in ((1, 0.81), (2, 0.82)):
        run_id = world.trained_run(f"run-{index}", [0.5, 0.7, final_auc], actor=alice)
        ledger.register_model_version(
            model_name="credit",
            run_id=run_id,
            artifact_name="model.pkl",
            input_schema=[{"name": "age", "type": "int"}],
            policy=None,
            actor=bob,
        )
    for who in ("carol", "dave"):
        world.decide(who, "credit", 1)
    world.deploy("champion", 1)
    world.decide("carol", "credit", 2)
    world.decide("dave", "credit", 2)
    world.deploy("challenger", 2)
    world.deploy("champion", 2)
    world.deploy("canary", 1, share=0.1)
    world.deploy("rollback", 1)
    world.deploy("stop")
    world.deploy("resume")
    world.deploy("retire")
    ledger.tag_run(world.runs[0], {"team": "risk", "stage": "baseline"}, actor=alice)
    ledger.describe_run(world.runs[0], "the first try", actor=alice)
    ledger.tag_dataset_version(world.datasets[1], {"source": "bureau"}, actor=alice)
    ledger.describe_dataset_version(world.datasets[1], "2026 applications", actor=alice)
    ledger.tag_model_version("credit", 2, {"reviewed": "yes"}, actor=bob)
    ledger.describe_model_version("credit", 2, "the champion", actor=bob)
    services.runner.catch_up()
    return world


@pytest.fixture
def world(services: Services) -> World:
    """The projected world."""
    return build_world(services)


def snapshot(services: Services, tables: tuple[sa.Table, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by primary key."""
    with services.engine.connect() as conn:
        return {
            t.name: [tuple(row) for row in conn.execute(sa.select(t).order_by(*t.primary_key.columns))] for t in tables
        }


def moment_before(text: str) -> str:
    return format_timestamp(parse_timestamp(text) - timedelta(microseconds=1))


# -- rows -----------------------------------------------------------------------------


def test_principals_keep_roles_keys_and_deactivation(world: World) -> None:
    with world.services.engine.connect() as conn:
        people = {p.name: p for p in q.list_principals(conn)}
        carol = q.principal(conn, world.people["carol"])
        keys = conn.execute(sa.select(r.reg_api_keys).where(r.reg_api_keys.c.principal_id == world.people["alice"]))
        (api_key,) = keys.all()

    assert set(people) == {"admin", "alice", "bob", "carol", "dave", "erin", "olga"}
    assert people["alice"].roles == ["data_scientist"]
    assert (people["erin"].active, people["alice"].active) == (False, True)
    assert carol is not None
    assert [k.key_id for k in carol.signing_keys] == [world.signers["carol"][1]]
    assert carol.signing_keys[0].public_key_pem == public_key_pem(world.signers["carol"][0].public_key)
    assert (api_key.label, api_key.revoked) == ("laptop", True)


def test_datasets_code_and_pipeline_specs_are_recorded(world: World) -> None:
    with world.services.engine.connect() as conn:
        versions = q.dataset_versions(conn, "credit")
        code = q.code_version(conn, world.code_id)
        latest, first = q.pipeline(conn, "credit-rf"), q.pipeline(conn, "credit-rf", 1)

    assert [(v.number, v.digest, v.deprecated) for v in versions] == [
        (1, digest("data1"), True),
        (2, digest("data2"), False),
    ]
    assert versions[1].schema_ == [{"name": "age", "type": "int"}]
    assert versions[1].datasheet == {"motivation": "credit scoring", "pii_columns": ["age"]}
    assert versions[1].registered_by == world.people["alice"]
    assert code is not None and (code.commit, code.entrypoint) == ("abcdef1", "credit.train:main")
    assert latest is not None and first is not None
    assert (latest.number, latest.spec["features"], first.spec) == (2, ["age"], SPEC)


def test_a_run_row_holds_params_metrics_artifacts_and_its_end(world: World) -> None:
    run_id = world.runs[1]
    with world.services.engine.connect() as conn:
        run = q.run(conn, run_id)
        auc = q.run_metrics(conn, run_id, "auc")
        final = q.final_metrics(conn, run_id)
        artifacts = q.run_artifacts(conn, run_id)
        succeeded = q.list_runs(conn, status="succeeded")

    assert run is not None
    assert run.params == {"n_estimators": 100, "max_depth": 4, "features": "all"}
    assert (run.status, run.pipeline_name, run.pipeline_version, run.metric_points) == ("succeeded", "credit-rf", 1, 4)
    assert run.finished_at is not None and run.finished_at > run.requested_at
    assert run.dataset_version_ids == world.datasets
    assert [(p.step, p.value) for p in auc] == [(0, 0.5), (1, 0.7), (2, 0.82)]
    assert {k: (p.step, p.value) for k, p in final.items()} == {"auc": (2, 0.82), "loss": (0, 0.5)}
    assert final["loss"].timestamp == "t0"
    assert [(x.name, x.digest, x.size) for x in artifacts] == [("model.pkl", digest("run-2"), 1234)]
    assert {x.id for x in succeeded} == set(world.runs)


def test_versions_are_approved_once_the_policy_is_met(world: World) -> None:
    with world.services.engine.connect() as conn:
        versions = q.model_versions(conn, "credit")
        decisions = q.approvals(conn, versions[0].id)
        found = q.model(conn, "credit")

    assert found is not None
    assert found.policy == {
        "required_approvals": 2,
        "separation_of_duties": True,
        "rejection_blocks": True,
        "min_impact_ratio": 0.8,
        "retrain_on_drift": False,
    }
    assert [(v.number, v.state, v.approvals, v.rejections) for v in versions] == [
        (1, "approved", 2, 0),
        (2, "approved", 2, 0),
    ]
    assert versions[0].registered_by == world.people["bob"]
    assert [d.approver for d in decisions] == [world.people["carol"], world.people["dave"]]
    assert all(d.decision == "approve" and d.signature for d in decisions)


def test_a_policy_change_restates_every_version_of_the_model(world: World) -> None:
    world.ledger.set_policy("credit", {"required_approvals": 3}, actor=ADMIN)
    world.services.runner.catch_up()
    with world.services.engine.connect() as conn:
        stricter = [v.state for v in q.model_versions(conn, "credit")]

    world.ledger.set_policy("credit", {"required_approvals": 1}, actor=ADMIN)
    world.services.runner.catch_up()
    with world.services.engine.connect() as conn:
        looser = [v.state for v in q.model_versions(conn, "credit")]

    assert stricter == ["pending", "pending"]
    assert looser == ["approved", "approved"]


def test_a_rejection_blocks_a_version(services: Services) -> None:
    world = build_world(services)
    run_id = world.trained_run("run-3", [0.6], actor=world.people["alice"])
    world.ledger.register_model_version(
        model_name="credit",
        run_id=run_id,
        artifact_name="model.pkl",
        input_schema=[],
        policy=None,
        actor=world.people["bob"],
    )
    world.decide("carol", "credit", 3, "reject")
    services.runner.catch_up()

    with services.engine.connect() as conn:
        version = q.model_version(conn, "credit", 3)

    assert version is not None and (version.state, version.rejections) == ("rejected", 1)


def test_the_deployment_row_and_history_follow_every_action(world: World) -> None:
    with world.services.engine.connect() as conn:
        now = q.deployment(conn, "credit")
        history = q.deployment_history(conn, "credit")

    assert now is not None
    assert (now.retired, now.stopped, now.champion_version_id, now.canary_share) == (True, False, None, None)
    assert [(h.action, h.number, h.share) for h in history] == [
        ("created", None, None),
        ("champion", 1, None),
        ("challenger", 2, None),
        ("champion", 2, None),
        ("canary", 1, 0.1),
        ("rollback", 1, None),
        ("stop", None, None),
        ("resume", None, None),
        ("retire", None, None),
    ]
    assert {h.actor for h in history} == {world.people["olga"]}


def test_promoting_the_challenger_or_canary_clears_that_slot(services: Services) -> None:
    world = build_world(services)
    run_id = world.trained_run("run-f", [0.9], actor=world.people["alice"])
    for number in (1, 2):
        world.ledger.register_model_version(
            model_name="fraud",
            run_id=run_id,
            artifact_name="model.pkl",
            input_schema=[],
            policy=None,
            actor=world.people["bob"],
        )
        for who in ("carol", "dave"):
            world.decide(who, "fraud", number)
    world.deploy("champion", 1, model="fraud")
    world.deploy("challenger", 2, model="fraud")
    world.deploy("canary", 2, share=0.25, model="fraud")
    services.runner.catch_up()
    with services.engine.connect() as conn:
        shadowed = q.deployment(conn, "fraud")
    world.deploy("champion", 2, model="fraud")
    services.runner.catch_up()
    with services.engine.connect() as conn:
        promoted = q.deployment(conn, "fraud")

    assert shadowed is not None and promoted is not None
    assert (shadowed.challenger_number, shadowed.canary_number, shadowed.canary_share) == (2, 2, 0.25)
    assert (promoted.champion_number, promoted.challenger_number, promoted.canary_number) == (2, None, None)
    assert promoted.canary_share is None and promoted.updated_at > shadowed.updated_at


def test_tags_and_descriptions_reach_runs_datasets_and_model_versions(world: World) -> None:
    with world.services.engine.connect() as conn:
        run = q.run(conn, world.runs[0])
        (_, dataset) = q.dataset_versions(conn, "credit")
        versions = q.model_versions(conn, "credit")

    assert run is not None and run.tags == {"stage": "baseline", "team": "risk"} and run.description == "the first try"
    assert (dataset.tags, dataset.description) == ({"source": "bureau"}, "2026 applications")
    assert [(v.tags, v.description) for v in versions] == [({}, ""), ({"reviewed": "yes"}, "the champion")]


def test_a_rebuild_reproduces_every_registry_row(world: World) -> None:
    before = snapshot(world.services, r.Registry.tables)

    world.services.runner.rebuild("registry")

    assert snapshot(world.services, r.Registry.tables) == before
    assert all(before[t.name] for t in r.Registry.tables if t.name != "reg_reproductions")  # no runner here


# -- lineage and champion at a moment ---------------------------------------------------


def test_lineage_holds_the_whole_chain_of_a_version(world: World) -> None:
    with world.services.engine.connect() as conn:
        chain = a.lineage(conn, "credit", 1)
        missing = a.lineage(conn, "credit", 9)

    assert chain is not None and missing is None
    assert chain.version.run_id == world.runs[0]
    assert chain.run is not None
    assert chain.run.params == {"n_estimators": 100, "max_depth": 4, "features": "all"}
    assert {k: p.value for k, p in chain.run.final_metrics.items()} == {"auc": 0.81, "loss": 0.5}
    assert chain.run.metric_points == 4 and chain.run.environment is None
    assert [x.name for x in chain.run.artifacts] == ["model.pkl"]
    assert chain.run.artifacts[0].digest == chain.version.artifact_digest
    assert [(d.id, d.digest) for d in chain.datasets] == [
        (world.datasets[0], digest("data1")),
        (world.datasets[1], digest("data2")),
    ]
    assert chain.datasets[0].datasheet["pii_columns"] == ["age"]
    assert chain.code_version is not None and chain.code_version.id == world.code_id
    assert chain.pipeline is not None and (chain.pipeline.number, chain.pipeline.spec) == (1, SPEC)
    assert [x.approver for x in chain.approvals] == [world.people["carol"], world.people["dave"]]
    assert all(x.statement["artifact_digest"] == chain.version.artifact_digest for x in chain.approvals)
    assert all(x.signature and x.key_id for x in chain.approvals)
    assert [h.action for h in chain.deployment_history][:2] == ["created", "champion"]
    assert json.loads(chain.model_dump_json())["datasets"][0]["schema"] == [{"name": "age", "type": "int"}]


def test_champion_at_answers_for_every_moment_of_the_deployment(world: World) -> None:
    with world.services.engine.connect() as conn:
        history = {
            h.action + (str(h.number) if h.action == "champion" else ""): h
            for h in q.deployment_history(conn, "credit")
        }

        def ask(at: str) -> tuple[int | None, bool, bool, int | None]:
            answer = a.champion_at(conn, "credit", at)
            return answer.number, answer.stopped, answer.retired, answer.decided_by

        before = ask(moment_before(history["champion1"].recorded_at))
        first = ask(history["champion1"].recorded_at)
        between = ask(moment_before(history["champion2"].recorded_at))
        second = ask(history["champion2"].recorded_at)
        rolled_back = ask(history["rollback"].recorded_at)
        stopped = ask(history["stop"].recorded_at)
        resumed = ask(history["resume"].recorded_at)
        retired = ask(history["retire"].recorded_at)
        other_model = a.champion_at(conn, "nobody", history["retire"].recorded_at)

    assert before == (None, False, False, None)
    assert first == between == (1, False, False, history["champion1"].notification_id)
    assert second == (2, False, False, history["champion2"].notification_id)
    assert rolled_back == (1, False, False, history["rollback"].notification_id)
    assert stopped == (1, True, False, history["rollback"].notification_id)
    assert resumed == (1, False, False, history["rollback"].notification_id)
    assert retired == (None, False, True, history["retire"].notification_id)
    assert (other_model.number, other_model.decided_by) == (None, None)


def test_champion_at_reads_any_rfc3339_offset(world: World) -> None:
    with world.services.engine.connect() as conn:
        champion = next(h for h in q.deployment_history(conn, "credit") if h.action == "champion")
        moment = parse_timestamp(champion.recorded_at)
        in_new_york = moment.astimezone(zoneinfo.ZoneInfo("America/New_York")).isoformat()
        answer = a.champion_at(conn, "credit", in_new_york)
        with pytest.raises(InvalidPayload):
            a.champion_at(conn, "credit", "yesterday")

    assert answer.number == 1
