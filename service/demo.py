"""``mlledger demo``: a whole governed lifecycle on the configured ledger.

A scikit-learn dataset is registered, two recorded pipelines (a gradient-boosting
classifier and a torch MLP) are trained by the runner, both models are
registered, two approvers sign approvals on their side, an operator deploys the
first, its run is re-executed and the verdict recorded, and the lineage is printed. Everything goes through the
HTTP API (in-process) with the typed client, exactly as remote clients would.
"""

from __future__ import annotations

import csv
import io
import json
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
    tag = uuid.uuid4().hex[:6]
    model_name = f"breast-cancer-{tag}"
    app = create_app(services.settings, run_projector=True, run_runner=True, services=services)
    with TestClient(app) as http:
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
        common = {"features": features, "target": "target", "task": "classification"}
        scientist.add_pipeline_spec(
            "gbm",
            "sklearn",
            {
                "estimator": "sklearn.ensemble.GradientBoostingClassifier",
                "estimator_params": {"n_estimators": 100, "max_depth": 3},
                **common,
            },
        )
        scientist.add_pipeline_spec("mlp", "torch", {"hidden_layers": [32, 16], **common})
        runs = {}
        for pipeline, params in (("gbm", {}), ("mlp", {"epochs": 30})):
            requested = scientist.start_run(
                name=f"{pipeline}-baseline",
                mode="runner",
                pipeline=pipeline,
                dataset_version_ids=[dataset.id],
                params=params,
                seed=42,
            )
            say(f"requested a {pipeline} run {requested.id}; the runner picks it up")
            runs[pipeline] = requested.id
        versions = {}
        for pipeline, run_id in runs.items():
            run = scientist.wait_for_run(run_id)
            if run["status"] != "succeeded":
                raise RuntimeError(f"the {pipeline} run {run['status']}")
            model_file = next(name for name in run["artifacts"] if name.startswith("model."))
            say(f"{pipeline} run succeeded on {run['device_used']}: model {run['artifacts'][model_file]}")
            version, _ = scientist.register_model_version(
                model_name if pipeline == "gbm" else f"{model_name}-mlp",
                run_id,
                model_file,
                input_schema=[{"name": f, "type": "float"} for f in features],
            )
            versions[pipeline] = version
        version = versions["gbm"]
        say(f"registered {model_name} v{version} (gbm) and {model_name}-mlp v{versions['mlp']} (torch)")
        for name in ("approver-1", "approver-2"):
            approver_id, client = people[name]
            signer = Signer.generate()  # held by the approver, never sent to the service
            key_id = client.register_signing_key(approver_id, signer)
            client.decide(model_name, version, signer, key_id, "approve", f"{name}: validation report reviewed")
            say(f"{name} signed an approval with key {key_id}")
        deployed = people["operator"][1].deploy(model_name, "champion", version, reason="demo go-live")
        say(f"deployed {model_name} v{version} as champion (position {deployed.position})")
        reproduction = scientist.reproduce(runs["gbm"])
        scientist.wait_for_run(reproduction.id)
        verdict = scientist.run(runs["gbm"])["reproductions"].get(reproduction.id, "pending")
        say(f"reproduced the gbm run: {verdict}")
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
