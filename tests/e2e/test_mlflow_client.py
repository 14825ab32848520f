"""The stock MLflow client (mlflow-skinny) against a ledger API process, on
SQLite and on PostgreSQL: runs, artifacts, autolog, logged models, dataset
inputs, search, the registry, and governance of the champion alias. Every call
is a signed event and ``mlledger verify`` checks them all afterwards."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from support.governance_world import World
from support.ledger import ADMIN_KEY, drop_schema, make_settings, require_postgres, run_cli
from support.runner_http import ledger_api

from domain.deployment import Deployment
from domain.run import Run
from mlledger.client import LedgerClient
from service.app import create_app
from service.bootstrap import Services, open_services

pytestmark = pytest.mark.slow


@dataclass
class Ledger:
    """The ledger API process, its services (to inspect the log) and everyone's keys."""

    url: str
    services: Services
    keys: dict[str, str]
    world: World


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    if request.param == "postgres":
        require_postgres()
    root = Path(tmp_path_factory.mktemp("mlflow"))
    settings = make_settings(request.param, root / "data")
    services = open_services(settings, migrate=True)
    with TestClient(create_app(services.settings, run_projector=False, services=services)) as http:
        world = World(http, LedgerClient(api_key=ADMIN_KEY, http=http))
        keys = {}
        for name, roles, signs in (
            ("alice", ["data_scientist"], False),
            ("bob", ["approver"], True),
            ("carol", ["approver"], True),
            ("olivia", ["operator"], False),
        ):
            person = world.add(name, roles, signs=signs)
            keys[name] = person.client.headers["Authorization"].removeprefix("Bearer ")
        with ledger_api(services, root / "api.log") as url:
            yield Ledger(url, services, keys, world)
    services.close()
    if request.param == "postgres":
        drop_schema(settings.database_schema)


@pytest.fixture
def as_alice(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", ledger.keys["alice"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(ledger.url)
    return MlflowClient(ledger.url)


def _position(ledger: Ledger) -> int:
    return ledger.services.ledger.position()


def _run(ledger: Ledger, run_id: str) -> Run:
    ledger.services.ledger.repository.cache = None  # another process wrote it
    found: Run = ledger.services.ledger.get(run_id, Run)
    return found


def test_a_run_records_params_metrics_tags_and_an_artifact(
    ledger: Ledger, as_alice: MlflowClient, tmp_path: Path
) -> None:
    mlflow.set_experiment("credit")
    report = tmp_path / "report.txt"
    report.write_text("validation report")

    with mlflow.start_run(run_name="gbm") as active:
        mlflow.log_param("max_depth", 3)
        for step in range(3):
            mlflow.log_metric("auc", 0.8 + step / 100, step=step)
        mlflow.set_tag("team", "risk")
        mlflow.log_artifact(str(report), artifact_path="reports")

    run = as_alice.get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "gbm"
    assert run.data.params == {"max_depth": "3"}
    assert run.data.metrics == {"auc": pytest.approx(0.82)}
    assert run.data.tags["team"] == "risk"
    assert [m.value for m in as_alice.get_metric_history(run.info.run_id, "auc")] == pytest.approx([0.8, 0.81, 0.82])
    assert [f.path for f in as_alice.list_artifacts(run.info.run_id, "reports")] == ["reports/report.txt"]
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="reports/report.txt"))
    assert downloaded.read_text() == "validation report"
    recorded = _run(ledger, run.info.run_id)
    assert recorded.status == "succeeded" and recorded.params == {"max_depth": "3"}
    assert "reports%2Freport.txt" in recorded.artifacts


def test_search_runs_takes_an_mlflow_filter_string_and_order(ledger: Ledger, as_alice: MlflowClient) -> None:
    experiment_id = as_alice.create_experiment("search-me")
    for depth, auc in ((3, 0.91), (5, 0.88), (3, 0.70)):
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.log_params({"depth": depth})
            mlflow.log_metric("auc", auc)

    found = as_alice.search_runs(
        [experiment_id], filter_string="metrics.auc > 0.75 and params.depth = '3'", order_by=["metrics.auc DESC"]
    )
    everything = as_alice.search_runs([experiment_id], order_by=["metrics.auc ASC"], max_results=2)

    assert [r.data.metrics["auc"] for r in found] == [pytest.approx(0.91)]
    assert [r.data.metrics["auc"] for r in everything] == pytest.approx([0.70, 0.88])
    assert everything.token is not None
    paged, token = [], None
    while True:
        page = as_alice.search_runs([experiment_id], max_results=1, page_token=token)
        paged += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    by_start = as_alice.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    assert paged == [r.info.run_id for r in by_start] and len(paged) == 3


def test_bad_input_gets_an_mlflow_error_and_records_nothing(ledger: Ledger, as_alice: MlflowClient) -> None:
    headers = {"Authorization": f"Bearer {ledger.keys['alice']}"}
    with mlflow.start_run() as active:
        run_id = active.info.run_id
        before = _position(ledger)

        with pytest.raises(MlflowException) as nan:
            as_alice.log_metric(run_id, "loss", math.nan)
        with pytest.raises(MlflowException) as unknown:
            as_alice.log_param(str(uuid.uuid4()), "a", "1")
        with pytest.raises(MlflowException) as malformed:
            as_alice.search_runs(["0"], filter_string="metrics.auc >>> 1")
        with pytest.raises(MlflowException) as unknown_model:
            as_alice.get_logged_model("m-" + uuid.uuid4().hex)
        with pytest.raises(MlflowException) as runless_model:
            as_alice.create_logged_model(active.info.experiment_id, name="loose")
        with pytest.raises(MlflowException) as bad_key:
            stranger = MlflowClient(ledger.url)
            with pytest.MonkeyPatch.context() as patched:
                patched.setenv("MLFLOW_TRACKING_TOKEN", "mll_not-a-key")
                stranger.log_metric(run_id, "auc", 0.5)
        oversized = httpx.post(
            f"{ledger.url}/api/2.0/mlflow/runs/log-batch",
            headers=headers,
            json={"run_id": run_id, "metrics": [{"key": "m", "value": 1, "step": i} for i in range(1001)]},
        )
        half_bad = httpx.post(
            f"{ledger.url}/api/2.0/mlflow/runs/log-batch",
            headers=headers,
            json={"run_id": run_id, "params": [{"key": "p", "value": "1"}], "metrics": [{"key": "m", "value": "x"}]},
        )
        no_digest = httpx.post(
            f"{ledger.url}/api/2.0/mlflow/runs/log-inputs",
            headers=headers,
            json={"run_id": run_id, "datasets": [{"dataset": {"name": "d", "source_type": "local", "source": "x"}}]},
        )
        stray_upload = httpx.put(
            f"{ledger.url}/api/2.0/mlflow-artifacts/artifacts/0/{uuid.uuid4()}/artifacts/a.txt",
            headers=headers,
            content=b"data",
        )

        assert nan.value.error_code == "INVALID_PARAMETER_VALUE" and "finite" in nan.value.message
        assert unknown.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert malformed.value.error_code == "INVALID_PARAMETER_VALUE"
        assert unknown_model.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert runless_model.value.error_code == "INVALID_PARAMETER_VALUE" and "run" in runless_model.value.message
        assert bad_key.value.error_code == "UNAUTHENTICATED"
        assert oversized.status_code == 422 and oversized.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert half_bad.status_code == 422 and half_bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert no_digest.status_code == 422 and "digest" in no_digest.json()["message"]
        assert stray_upload.status_code == 404 and stray_upload.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert _position(ledger) == before
        assert "p" not in as_alice.get_run(run_id).data.params


def test_sklearn_autolog_records_params_metrics_the_model_and_its_dataset(
    ledger: Ledger, as_alice: MlflowClient
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True)
    mlflow.set_experiment("autolog")
    mlflow.sklearn.autolog(log_models=True, log_datasets=True, silent=True, serialization_format="cloudpickle")
    try:
        with mlflow.start_run() as active:
            LogisticRegression(max_iter=200, C=0.5).fit(features, target)
    finally:
        mlflow.sklearn.autolog(disable=True)

    run = as_alice.get_run(active.info.run_id)
    assert run.data.params["C"] == "0.5"
    assert run.data.metrics["training_accuracy_score"] > 0.9
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.inputs is not None and run.outputs is not None
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest and dataset_input.dataset.source_type
    [logged] = as_alice.search_logged_models([run.info.experiment_id], filter_string="name = 'model'")
    assert logged.source_run_id == run.info.run_id and str(logged.status) == "READY"
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]

    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "iris-autolog")

    assert version.version == "1" and version.source == f"models:/{logged.model_id}"
    loaded = mlflow.sklearn.load_model("models:/iris-autolog/1")
    assert (loaded.predict(features[:5]) == target[:5]).all()
    recorded = _run(ledger, run.info.run_id)
    assert recorded.dataset_inputs[0]["digest"] == dataset_input.dataset.digest
    assert f"%2Fmodels%2F{logged.model_id}%2FMLmodel" in recorded.artifacts


def test_writes_from_many_threads_to_one_run_all_land(ledger: Ledger, as_alice: MlflowClient) -> None:
    """Autologging and async logging write one run from several threads; a tracking server takes
    every write in arrival order, so none may fail because another thread wrote the run first."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric, Param, RunTag

    experiment_id = as_alice.create_experiment("threads")
    run_id = as_alice.create_run(experiment_id).info.run_id
    threads, writes = 8, 6

    def write(thread: int) -> None:
        for n in range(writes):
            as_alice.log_batch(
                run_id,
                metrics=[Metric(f"loss_{thread}", 1.0 / (n + 1), 0, n)],
                params=[Param(f"p_{thread}_{n}", str(n))],
                tags=[RunTag(f"t_{thread}", str(n))],
            )
            as_alice.set_tag(run_id, f"last_{thread}", str(n))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))  # raises the first failed write, if any
    as_alice.set_terminated(run_id)

    run = as_alice.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {f"p_{t}_{n}": str(n) for t in range(threads) for n in range(writes)}
    assert {run.data.tags[f"last_{t}"] for t in range(threads)} == {str(writes - 1)}
    for thread in range(threads):
        history = as_alice.get_metric_history(run_id, f"loss_{thread}")
        assert sorted(m.step for m in history) == list(range(writes))
    recorded = _run(ledger, run_id)
    assert len(recorded.params) == threads * writes


def test_log_model_then_register_the_logged_model_whose_files_stay_fixed(
    ledger: Ledger, as_alice: MlflowClient
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    features, target = load_iris(return_X_y=True)
    fitted = DecisionTreeClassifier(max_depth=3).fit(features, target)
    with mlflow.start_run() as active:
        info = mlflow.sklearn.log_model(fitted, name="tree", serialization_format="cloudpickle", params={"depth": "3"})

    version = mlflow.register_model(info.model_uri, "iris-tree")

    assert info.model_uri == f"models:/{info.model_id}"
    assert version.source == info.model_uri and version.run_id == active.info.run_id
    assert as_alice.get_logged_model(info.model_id).params == {"depth": "3"}
    assert as_alice.get_model_version_download_uri("iris-tree", version.version).endswith(
        f"/models/{info.model_id}/artifacts"
    )
    loaded = mlflow.sklearn.load_model("models:/iris-tree/1")
    assert (loaded.predict(features) == fitted.predict(features)).all()
    before = _position(ledger)
    overwrite = httpx.put(
        f"{ledger.url}/api/2.0/mlflow-artifacts/artifacts/0/models/{info.model_id}/artifacts/model.pkl",
        headers={"Authorization": f"Bearer {ledger.keys['alice']}"},
        content=b"not the model",
    )
    assert overwrite.status_code in (409, 422) and overwrite.json()["error_code"] in (
        "INVALID_PARAMETER_VALUE",
        "INVALID_STATE",
    )
    assert _position(ledger) == before
    assert (
        mlflow.sklearn.load_model("models:/iris-tree/1").predict(features[:3]).tolist()
        == fitted.predict(features[:3]).tolist()
    )


def test_log_inputs_records_datasets_by_digest(ledger: Ledger, as_alice: MlflowClient) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name="loans", digest="a1b2c3d4", source_type="local", source='{"uri": "/data/loans.csv"}')
    with mlflow.start_run() as active:
        as_alice.log_inputs(
            active.info.run_id, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        )

    inputs = as_alice.get_run(active.info.run_id).inputs
    assert inputs is not None
    [shown] = inputs.dataset_inputs
    assert (shown.dataset.name, shown.dataset.digest) == ("loans", "a1b2c3d4")
    assert {t.key: t.value for t in shown.tags} == {"mlflow.data.context": "training"}
    ledger.services.ledger.repository.cache = None
    logged = [
        e for e in ledger.services.ledger.events.get(uuid.UUID(active.info.run_id)) if isinstance(e, Run.InputsLogged)
    ]
    assert [d["digest"] for e in logged for d in e.datasets] == ["a1b2c3d4"]


def test_the_champion_alias_needs_the_signed_approvals(
    ledger: Ledger, as_alice: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    features, target = load_iris(return_X_y=True)
    model_dir = tmp_path / "model"
    fitted = DecisionTreeClassifier(max_depth=2).fit(features, target)
    mlflow.sklearn.save_model(fitted, str(model_dir), serialization_format="cloudpickle")
    with mlflow.start_run() as active:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    version = mlflow.register_model(f"runs:/{active.info.run_id}/model", "iris")
    assert version.version == "1"
    before = _position(ledger)
    for path in ("model/MLmodel", "model/extra.txt"):
        overwrite = httpx.put(
            f"{ledger.url}/api/2.0/mlflow-artifacts/artifacts/0/{active.info.run_id}/artifacts/{path}",
            headers={"Authorization": f"Bearer {ledger.keys['alice']}"},
            content=b"not the model",
        )
        assert overwrite.status_code in (409, 422), overwrite.text
    assert _position(ledger) == before

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", ledger.keys["olivia"])
    operator = MlflowClient(ledger.url)
    with pytest.raises(MlflowException) as refused:
        operator.set_registered_model_alias("iris", "champion", "1")
    assert refused.value.error_code == "INVALID_STATE"
    assert "0 of 2 required approvals" in refused.value.message

    for approver in ("bob", "carol"):
        person = ledger.world.people[approver]
        assert person.signer is not None and person.key_id is not None
        client = LedgerClient(ledger.url, ledger.keys[approver])
        client.decide("iris", 1, person.signer, person.key_id, "approve", "reviewed")
    operator.set_registered_model_alias("iris", "champion", "1")

    assert operator.get_model_version_by_alias("iris", "champion").version == "1"
    assert operator.get_model_version("iris", "1").current_stage == "Production"
    ledger.services.ledger.repository.cache = None
    deployment: Deployment = ledger.services.ledger.get(Deployment.create_id(model_name="iris"), Deployment)
    assert deployment.champion is not None and deployment.champion.number == 1
    history = [e for e in ledger.services.ledger.events.get(deployment.id) if isinstance(e, Deployment.ChampionSet)]
    assert [(e.number, e.reason) for e in history] == [(1, "alias champion")]
    downloaded = Path(mlflow.artifacts.download_artifacts("models:/iris@champion"))
    assert (downloaded / "MLmodel").is_file()


def test_experiments_runs_and_registry_labels_are_events_never_erasures(
    ledger: Ledger, as_alice: MlflowClient, tmp_path: Path
) -> None:
    from mlflow.entities import ViewType

    experiment_id = as_alice.create_experiment("to-delete", tags={"team": "risk"})
    with mlflow.start_run(experiment_id=experiment_id) as active:
        mlflow.log_metric("auc", 0.5)
        (tmp_path / "w.bin").write_bytes(b"weights")
        mlflow.log_artifact(str(tmp_path / "w.bin"))
    as_alice.delete_run(active.info.run_id)
    assert as_alice.search_runs([experiment_id]) == []
    assert [r.info.run_id for r in as_alice.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)] == [
        active.info.run_id
    ]
    as_alice.delete_experiment(experiment_id)

    assert as_alice.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert "to-delete" not in [e.name for e in as_alice.search_experiments()]
    assert "to-delete" in [e.name for e in as_alice.search_experiments(view_type=ViewType.DELETED_ONLY)]
    deleted = as_alice.get_experiment_by_name("to-delete")
    assert deleted is not None and deleted.tags == {"team": "risk"}
    assert _run(ledger, active.info.run_id).deleted and "w.bin" in _run(ledger, active.info.run_id).artifacts

    with mlflow.start_run() as source:
        mlflow.log_artifact(str(tmp_path / "w.bin"))
    as_alice.create_registered_model("labels", description="first")
    version = as_alice.create_model_version("labels", f"runs:/{source.info.run_id}/w.bin", source.info.run_id)
    as_alice.update_registered_model("labels", description="second")
    as_alice.update_model_version("labels", version.version, description="v1 notes")
    as_alice.set_registered_model_tag("labels", "owner", "risk")
    as_alice.set_model_version_tag("labels", version.version, "validated", "yes")
    as_alice.set_registered_model_alias("labels", "candidate", version.version)
    staged = as_alice.transition_model_version_stage("labels", version.version, "Staging")
    with pytest.raises(MlflowException) as production:
        as_alice.transition_model_version_stage("labels", version.version, "Production")

    model = as_alice.get_registered_model("labels")
    assert (model.description, model.tags, model.aliases) == ("second", {"owner": "risk"}, {"candidate": "1"})
    shown = as_alice.get_model_version("labels", version.version)
    assert (shown.description, shown.tags, staged.current_stage) == ("v1 notes", {"validated": "yes"}, "Staging")
    assert production.value.error_code == "PERMISSION_DENIED"  # deploying is the operator's, and needs approvals
    assert [m.name for m in as_alice.search_registered_models("name = 'labels'")] == ["labels"]
    assert [v.version for v in as_alice.search_model_versions(f"run_id = '{source.info.run_id}'")] == ["1"]


def test_mlledger_verify_checks_every_signed_event_the_client_caused(ledger: Ledger, as_alice: MlflowClient) -> None:
    with mlflow.start_run():
        mlflow.log_metric("auc", 0.9)
    position = _position(ledger)

    verified = run_cli(ledger.services.settings, "verify", "--workers", "1")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"OK: {position} events" in verified.stdout
