"""``mlledger demo``: a whole governed lifecycle on the configured ledger.

A scikit-learn dataset is registered, a model is trained and recorded as a run,
the version is registered, two approvers sign their approvals on their side,
an operator deploys it, and the lineage is printed. Everything goes through the
HTTP API (in-process) with the typed client, exactly as remote clients would.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import uuid
import warnings
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the test client's transport notice is not for demo users
    from fastapi.testclient import TestClient

from domain.keys import Signer
from service.api.app import create_app
from service.auth import new_token
from service.bootstrap import Services
from service.client import LedgerClient
from service.ledger import SYSTEM_ACTOR


def _people(services: Services, http: TestClient, tag: str) -> dict[str, tuple[str, LedgerClient]]:
    ledger = services.ledger
    people = {}
    for name, roles in {
        "scientist": ["data_scientist"],
        "approver-1": ["approver"],
        "approver-2": ["approver"],
        "operator": ["operator"],
        "auditor": ["auditor"],
    }.items():
        written = ledger.register_principal(f"demo-{tag}-{name}", "user", roles, actor=SYSTEM_ACTOR)
        token = new_token()
        ledger.issue_api_key(written.id, token, "demo", actor=SYSTEM_ACTOR)
        people[name] = (written.id, LedgerClient(api_key=token, http=http))
    return people


def _breast_cancer_csv() -> tuple[bytes, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = [str(name) for name in data.feature_names]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*features, "target"])
    for row, target in zip(data.data, data.target, strict=True):
        writer.writerow([*(repr(float(v)) for v in row), int(target)])
    return out.getvalue().encode(), features


def run_demo(services: Services, say: Callable[[str], None] = print) -> dict[str, object]:
    """Run the demo lifecycle; return the lineage of the deployed version."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    tag = uuid.uuid4().hex[:6]
    model_name = f"breast-cancer-{tag}"
    with TestClient(create_app(services.settings, run_projector=True, services=services)) as http:
        people = _people(services, http, tag)
        scientist = people["scientist"][1]

        data, features = _breast_cancer_csv()
        dataset = scientist.upload_dataset(
            "breast-cancer-wisconsin",
            data,
            datasheet={
                "motivation": "demo of a governed model",
                "composition": "569 tumours, 30 features",
                "collection": "scikit-learn's bundled copy of the UCI dataset",
                "uses": "demonstration only",
            },
            source="sklearn.datasets.load_breast_cancer",
            filename="breast_cancer.csv",
        )
        say(f"registered dataset version {dataset.id} (position {dataset.position})")
        code = scientist.register_code_version("https://example.org/demo", "0123456789abcdef", entrypoint="demo:train")
        run = scientist.start_run(
            name="gbm-baseline", dataset_version_ids=[dataset.id], code_version_id=code.id, seed=42
        )
        params = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "random_state": 42}
        scientist.log_params(run.id, params)
        x, y = load_breast_cancer(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42, stratify=y)
        model = GradientBoostingClassifier(**params).fit(x_train, y_train)
        proba = model.predict_proba(x_test)[:, 1]
        metrics = [
            {"key": "accuracy", "value": float(accuracy_score(y_test, proba > 0.5)), "step": 0},
            {"key": "roc_auc", "value": float(roc_auc_score(y_test, proba)), "step": 0},
        ]
        scientist.log_metrics(run.id, metrics)
        digest = scientist.upload_artifact(run.id, "model.pkl", pickle.dumps(model))
        scientist.finish_run(run.id)
        accuracy, auc = metrics[0]["value"], metrics[1]["value"]
        say(f"recorded run {run.id}: accuracy {accuracy:.3f}, ROC AUC {auc:.3f}, model {digest}")

        version, _ = scientist.register_model_version(
            model_name, run.id, "model.pkl", input_schema=[{"name": f, "type": "float"} for f in features]
        )
        say(f"registered {model_name} v{version}")
        for name in ("approver-1", "approver-2"):
            approver_id, client = people[name]
            signer = Signer.generate()  # held by the approver, never sent to the service
            key_id = client.register_signing_key(approver_id, signer)
            client.decide(model_name, version, signer, key_id, "approve", f"{name}: validation report reviewed")
            say(f"{name} signed an approval with key {key_id}")
        deployed = people["operator"][1].deploy(model_name, "champion", version, reason="demo go-live")
        say(f"deployed {model_name} v{version} as champion (position {deployed.position})")
        lineage = people["auditor"][1].lineage(model_name, version, min_position=deployed.position)
        say(describe_lineage(lineage))
        return lineage


def describe_lineage(lineage: dict[str, Any]) -> str:
    """A readable account of a lineage answer (the API returns the full JSON)."""
    version, run = lineage["version"], lineage["run"]
    lines = [
        f"lineage of {version['model_name']} v{version['number']} ({version['state']}):",
        f"  artifact {version['artifact_digest']}",
        f"  registered by {version['registered_by']} at {version['registered_at']}",
    ]
    for dataset in lineage["datasets"]:
        lines.append(
            f"  dataset {dataset['name']} v{dataset['number']}: {dataset['row_count']} rows, {dataset['digest']}"
        )
        lines.append(f"    datasheet: {json.dumps(dataset['datasheet'], sort_keys=True)}")
    if lineage.get("code_version"):
        code = lineage["code_version"]
        lines.append(f"  code {code['repository']} @ {code['commit']} ({code['entrypoint']})")
    lines.append(f"  run {run['id']} by {run['submitted_by']}: {run['status']}, params {json.dumps(run['params'])}")
    for key, point in sorted(run["final_metrics"].items()):
        lines.append(f"    {key} = {point['value']:.4f}")
    for approval in lineage["approvals"]:
        lines.append(
            f"  {approval['decision']} by {approval['approver']} with key {approval['key_id']}: "
            f"signature {approval['signature'][:24]}... at {approval['recorded_at']}"
        )
    for change in lineage["deployment_history"]:
        target = f" v{change['number']}" if change.get("number") else ""
        lines.append(f"  deployment: {change['action']}{target} by {change['actor']} at {change['recorded_at']}")
    return "\n".join(lines)
