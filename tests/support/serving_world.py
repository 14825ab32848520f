"""A deployed, explained model behind the API: runner-trained versions, signed approvals, a champion."""

from __future__ import annotations

import csv
import io
import random
import time
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from domain.run import Run
from mlledger.client import LedgerClient
from service.bootstrap import Services
from support.governance_world import World
from support.ledger import ADMIN_KEY
from support.runner_world import running

FEATURES = ["age", "income", "debt"]
MODEL = "credit"


def credit_rows(rows: int, seed: int, income_shift: float = 0.0) -> list[dict[str, Any]]:
    """Applicants whose approval depends on income and debt; ``sex`` is a protected attribute, not a feature."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        age = rng.randint(18, 80)
        income = round(rng.gauss(60_000, 15_000) + income_shift, 2)
        debt = round(rng.uniform(0, 30_000), 2)
        sex = rng.choice(["f", "m"])
        approved = int(income - debt + rng.gauss(0, 8_000) > 40_000)
        out.append({"age": age, "income": income, "debt": debt, "sex": sex, "approved": approved})
    return out


def credit_csv(rows: int = 400, seed: int = 5) -> bytes:
    """The training table as CSV."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*FEATURES, "sex", "approved"])
    writer.writeheader()
    writer.writerows(credit_rows(rows, seed))
    return out.getvalue().encode()


def features_of(row: dict[str, Any]) -> dict[str, Any]:
    """The model's input from a table row."""
    return {f: row[f] for f in FEATURES}


@dataclass
class Deployed:
    """The world, its services, and the versions of the credit model."""

    world: World
    services: Services
    versions: list[int]


def make_people(http: TestClient) -> World:
    """A scientist, two approvers, an operator, a predictor and an auditor."""
    world = World(http, LedgerClient(api_key=ADMIN_KEY, http=http))
    world.add("alice", ["data_scientist"])
    world.add("bob", ["approver"], signs=True)
    world.add("carol", ["approver"], signs=True)
    world.add("olivia", ["operator"])
    world.add("pia", ["predictor"])
    world.add("audrey", ["auditor"])
    return world


def train_versions(world: World, services: Services, seeds: list[int], estimator: str | None = None) -> list[int]:
    """Train one runner run per seed and register each as a version of the credit model; return the numbers."""
    alice = world.people["alice"].client
    dataset = alice.upload_dataset(
        "credit", credit_csv(), datasheet={"motivation": "credit decisions", "protected_attributes": ["sex"]}
    )
    spec = {
        "estimator": estimator or "sklearn.ensemble.GradientBoostingClassifier",
        "estimator_params": {"n_estimators": 30, "max_depth": 2},
        "features": FEATURES,
        "target": "approved",
        "task": "classification",
    }
    alice.add_pipeline_spec("credit-gbm", "sklearn", spec)
    numbers = []
    with running(services):
        run_ids = [
            alice.start_run(
                name=f"credit-{seed}", mode="runner", pipeline="credit-gbm", dataset_version_ids=[dataset.id], seed=seed
            ).id
            for seed in seeds
        ]
        deadline = time.monotonic() + 120
        while not all(services.ledger.get(r, Run).finished for r in run_ids):
            assert time.monotonic() < deadline, "runs did not finish"
            time.sleep(0.1)
    for run_id in run_ids:
        assert services.ledger.get(run_id, Run).status == "succeeded"
        number, _ = alice.register_model_version(
            MODEL,
            run_id,
            "model.pkl",
            input_schema=[{"name": f, "type": "number"} for f in FEATURES],
            policy={"min_impact_ratio": None},
        )
        numbers.append(number)
    return numbers


def approve_all(world: World, versions: list[int]) -> None:
    """Two signed approvals for each version."""
    for number in versions:
        for approver in ("bob", "carol"):
            person = world.people[approver]
            assert person.signer is not None and person.key_id is not None
            person.client.decide(MODEL, number, person.signer, person.key_id, "approve", f"{approver} validated it")


def deploy_world(http: TestClient, services: Services, seeds: list[int]) -> Deployed:
    """Train, register, approve every version, and make the first the champion."""
    world = make_people(http)
    versions = train_versions(world, services, seeds)
    approve_all(world, versions)
    world.people["olivia"].client.deploy(MODEL, "champion", versions[0], reason="first release")
    return Deployed(world, services, versions)
