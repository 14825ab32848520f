"""A small organisation set up through the API, shared by end-to-end tests."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from domain.integrity.keys import Signer
from mlledger.client import ChangePending, LedgerClient
from support.ledger import ADMIN_KEY


@dataclass
class Person:
    """A principal with its client and, for approvers, a signing key."""

    id: str
    client: LedgerClient
    signer: Signer | None = None
    key_id: str | None = None


PRIVILEGED = ("admin", "approver")


def granted(admin: LedgerClient, second: LedgerClient, principal_id: str, role: str) -> None:
    """``admin`` grants ``role``; when it is privileged, ``second`` (another admin) confirms the proposal."""
    try:
        admin.grant_role(principal_id, role, reason="arranged by the test")
    except ChangePending as pending:
        second.confirm_change(pending.change_id)


def issued(admin: LedgerClient, second: LedgerClient, principal_id: str, label: str = "") -> str:
    """An API key for ``principal_id``: ``admin`` proposes it, ``second`` confirms and receives it."""
    try:
        return admin.issue_api_key(principal_id, label=label)
    except ChangePending as pending:
        return str(second.confirm_change(pending.change_id)["api_key"])


def second_admin_key(admin: LedgerClient, name: str = "admin-2") -> str:
    """The bootstrap admin, alone, registers a second admin and its key: granting it ``admin`` closes the
    bootstrap, so from then on privileged changes need both."""
    written = admin.create_principal(name, [])
    token = admin.issue_api_key(written.id, label=f"{name}'s key")
    admin.grant_role(written.id, "admin")
    return token


def second_admin(http: TestClient, admin: LedgerClient, name: str = "admin-2") -> LedgerClient:
    """A client of a second admin (see :func:`second_admin_key`)."""
    return LedgerClient(api_key=second_admin_key(admin, name), http=http)


@dataclass
class World:
    """Everyone, created by the admin with a second admin confirming privileged changes."""

    http: TestClient
    admin: LedgerClient
    people: dict[str, Person] = field(default_factory=dict)
    second: LedgerClient | None = None

    def __post_init__(self) -> None:
        if self.second is None:
            self.second = second_admin(self.http, self.admin)

    def add(self, name: str, roles: list[str], signs: bool = False) -> Person:
        """Register a principal, issue it a key, optionally register a signing key (its own, proven)."""
        assert self.second is not None
        written = self.admin.create_principal(name, [r for r in roles if r not in PRIVILEGED])
        for role in roles:
            if role in PRIVILEGED:
                granted(self.admin, self.second, written.id, role)
        token = self.issue_key(written.id, label=f"{name}'s key")
        person = Person(written.id, LedgerClient(api_key=token, http=self.http))
        if signs:
            person.signer = Signer.generate()
            person.key_id = person.client.register_signing_key(written.id, person.signer)
        self.people[name] = person
        return person

    def issue_key(self, principal_id: str, label: str = "") -> str:
        """Another API key for someone: proposed by the admin, confirmed by the second admin."""
        assert self.second is not None
        return issued(self.admin, self.second, principal_id, label)


def credit_csv(rows: int = 200, seed: int = 7) -> bytes:
    """A small credit table with a protected attribute."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["age", "income", "sex", "approved"])
    for _ in range(rows):
        age = rng.randint(18, 80)
        income = round(rng.uniform(10_000, 150_000), 2)
        writer.writerow([age, income, rng.choice(["f", "m"]), int(income > 60_000)])
    return out.getvalue().encode()


def make_world(http: TestClient) -> World:
    """Admin plus a data scientist, two approvers, a scientist who also approves, an operator, an auditor."""
    world = World(http, LedgerClient(api_key=ADMIN_KEY, http=http))
    world.add("alice", ["data_scientist"])
    world.add("bob", ["approver"], signs=True)
    world.add("carol", ["approver"], signs=True)
    world.add("dave", ["data_scientist", "approver"], signs=True)
    world.add("olivia", ["operator"])
    world.add("audrey", ["auditor"])
    return world


def train_and_register(world: World, scientist: str, model: str, *, seed: int = 1) -> int:
    """Upload data, record a client run with params/metrics/artifact, register a version; return its number."""
    client = world.people[scientist].client
    dataset = client.upload_dataset(
        "credit", credit_csv(seed=seed), datasheet={"motivation": "credit scoring", "protected_attributes": ["sex"]}
    )
    code = client.register_code_version("https://git.example/credit", "a1b2c3d4e5f6", entrypoint="train:main")
    run = client.start_run(name=f"{model}-run", dataset_version_ids=[dataset.id], code_version_id=code.id, seed=seed)
    client.log_params(run.id, {"max_depth": 3, "learning_rate": 0.1})
    for step in range(3):
        client.log_metric(run.id, "auc", 0.80 + step / 100, step)
    client.upload_artifact(run.id, "model.pkl", f"model-bytes-{model}-{seed}".encode())
    client.finish_run(run.id)
    # A client-reported run is never served, so no fairness report is computed for it: without a minimum
    # impact ratio in its policy, the fairness gate (which fails closed) would refuse every approval.
    number, _ = client.register_model_version(
        model,
        run.id,
        "model.pkl",
        input_schema=[{"name": "age", "type": "int"}, {"name": "income", "type": "float"}],
        policy={"min_impact_ratio": None},
    )
    return number


def approve(world: World, approver: str, model: str, version: int, decision: str = "approve") -> None:
    """A signed decision by ``approver``."""
    person = world.people[approver]
    assert person.signer is not None and person.key_id is not None
    person.client.decide(model, version, person.signer, person.key_id, decision, f"{approver} reviewed it")
