"""A small organisation set up through the API, shared by end-to-end tests."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from domain.integrity.keys import Signer
from mlledger.client import LedgerClient
from support.ledger import ADMIN_KEY


@dataclass
class Person:
    """A principal with its client and, for approvers, a signing key."""

    id: str
    client: LedgerClient
    signer: Signer | None = None
    key_id: str | None = None


@dataclass
class World:
    """Everyone, created by the admin."""

    http: TestClient
    admin: LedgerClient
    people: dict[str, Person] = field(default_factory=dict)

    def add(self, name: str, roles: list[str], signs: bool = False) -> Person:
        """Register a principal, issue it a key, optionally register a signing key."""
        written = self.admin.create_principal(name, roles)
        token = self.admin.issue_api_key(written.id, label=f"{name}'s key")
        person = Person(written.id, LedgerClient(api_key=token, http=self.http))
        if signs:
            person.signer = Signer.generate()
            person.key_id = person.client.register_signing_key(written.id, person.signer)
        self.people[name] = person
        return person


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
