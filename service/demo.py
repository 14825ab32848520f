"""``mlledger demo``: a whole governed lifecycle on the configured ledger.

A scikit-learn dataset is registered, two recorded pipelines (a gradient-boosting
classifier and a torch MLP) are trained by the runner, both models are
registered, their explainability, fairness and reference-profile reports are
computed, two approvers sign approvals on their side, an operator deploys the
first, its run is re-executed and the verdict recorded, and the lineage is
printed. Then the model serves 1,000 signed predictions, one decision's reasons
are shown, a shifted batch raises a drift alert, and the fairness report is
summarised. Everything goes through the HTTP API (in-process) with the typed
client, exactly as remote clients would.
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

from domain.integrity.keys import Signer
from mlledger.client import LedgerClient
from service.app import create_app
from service.application.auth import new_token
from service.application.ledger import SYSTEM_ACTOR
from service.bootstrap import Services
from service.exports.bundle import export_and_verify


def _people(services: Services, http: TestClient, tag: str) -> dict[str, tuple[str, LedgerClient]]:
    ledger = services.ledger
    people = {}
    for name, roles in {
        "scientist": ["data_scientist"],
        "approver-1": ["approver"],
        "approver-2": ["approver"],
        "operator": ["operator"],
        "auditor": ["auditor"],
        "application": ["predictor"],
    }.items():
        written = ledger.register_principal(f"demo-{tag}-{name}", "user", roles, actor=SYSTEM_ACTOR)
        token = new_token()
        ledger.issue_api_key(written.id, token, "demo", actor=SYSTEM_ACTOR)
        people[name] = (written.id, LedgerClient(api_key=token, http=http))
    return people


def _breast_cancer() -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of scikit-learn's breast cancer data, with a synthetic ``clinic`` attribute.

    ``clinic`` (A or B, assigned by a seeded draw) is not a feature; the
    datasheet declares it a protected attribute so the fairness report has a
    group to measure.
    """
    import random

    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = [str(name) for name in data.feature_names]
    rng = random.Random(7)
    rows = [
        {**{f: float(v) for f, v in zip(features, row, strict=True)}, "clinic": rng.choice("AB"), "target": int(t)}
        for row, t in zip(data.data, data.target, strict=True)
    ]
    return rows, features


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in columns])
    return out.getvalue().encode()


def run_demo(services: Services, say: Callable[[str], None] = print) -> dict[str, object]:
    """Run the demo lifecycle; return the lineage of the deployed version."""
    tag = uuid.uuid4().hex[:6]
    model_name = f"breast-cancer-{tag}"
    app = create_app(services.settings, run_projector=True, run_runner=True, run_workers=False, services=services)
    with TestClient(app) as http:
        people = _people(services, http, tag)
        scientist = people["scientist"][1]

        rows, features = _breast_cancer()
        dataset = scientist.upload_dataset(
            "breast-cancer-wisconsin",
            _csv(rows, [*features, "clinic", "target"]),
            datasheet={
                "motivation": "demo of a governed model",
                "composition": "569 tumours, 30 features; clinic is a synthetic attribute added for the demo",
                "collection": "scikit-learn's bundled copy of the UCI dataset",
                "uses": "demonstration only",
                "protected_attributes": ["clinic"],
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
        services.runner.catch_up()
        app.state.serving.reports.run_once()  # normally done in the background by `mlledger serve`
        services.runner.catch_up()
        say(describe_reports(people["auditor"][1], model_name, version))
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
        say(describe_lineage(lineage.raw))
        serve_predictions(people, model_name, rows, features, say)
        services.runner.catch_up()
        export_and_verify(services, model_name, say=say)
        return lineage.raw


def serve_predictions(
    people: dict[str, tuple[str, LedgerClient]],
    model_name: str,
    rows: list[dict[str, Any]],
    features: list[str],
    say: Callable[[str], None],
) -> None:
    """1,000 signed predictions, the reasons of one, and a drift alert on a shifted batch."""
    import time

    application, auditor, operator = people["application"][1], people["auditor"][1], people["operator"][1]
    records = [
        {
            "input": {f: rows[i % len(rows)][f] for f in features},
            "request_id": f"demo-{i}",
            "subject_id": f"patient-{i % len(rows)}",
        }
        for i in range(1000)
    ]
    started = time.perf_counter()
    served: list[dict[str, Any]] = []
    position = 0
    for start in range(0, 1000, 250):
        answer = application.predict_batch(model_name, records[start : start + 250])
        served.extend(answer["predictions"])
        position = answer["position"]
    elapsed = time.perf_counter() - started
    say(f"served {len(served)} signed predictions in {elapsed:.2f} s; inputs encrypted per patient")
    first = served[0]
    decision = auditor.decision(first["prediction_id"], min_position=position)
    say(f"decision {first['request_id']}: {json.dumps(first['output'])}; top reasons:")
    for code in first["reason_codes"]:
        say(f"  {code['feature']} = {code['value']:.4g} contributes {code['contribution']:+.4f}")
    say(f"  recorded as event {decision['event']['hash'][:16]}... signed by key {decision['event']['key_id']}")
    shifted = [
        {
            "input": {f: rows[i][f] * (1.6 if "radius" in f or "area" in f else 1.0) for f in features},
            "request_id": f"demo-shifted-{i}",
        }
        for i in range(300)
    ]
    position = application.predict_batch(model_name, shifted)["position"]
    check = operator.check_drift(model_name, window=300, min_position=position)
    if check["alert_position"] is not None:
        say(
            f"drift alert recorded at position {check['alert_position']}: "
            f"{', '.join(check['comparison']['drifted_features'][:6])} drifted"
        )
    else:
        say("no drift detected on the shifted batch")


def describe_reports(auditor: LedgerClient, model_name: str, version: int) -> str:
    """The explanation and fairness reports in a few lines."""
    explanations = auditor.report(model_name, version, "explanations")["summary"]
    lines = [f"explanations ({explanations['explainer']} explainer, {explanations['n_rows']} validation rows):"]
    for entry in explanations["mean_abs_shap"][:4]:
        lines.append(f"  mean |SHAP| {entry['feature']}: {entry['mean_abs_shap']:.4f}")
    fairness = auditor.report(model_name, version, "fairness")["summary"]
    for attribute in fairness["attributes"]:
        rates = ", ".join(f"{g['group']}: {g['selection_rate']:.3f}" for g in attribute["groups"])
        lines.append(
            f"fairness by {attribute['name']}: selection rate {rates}; lowest impact ratio "
            f"{attribute['min_impact_ratio']:.3f}"
        )
    return "\n".join(lines)


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
