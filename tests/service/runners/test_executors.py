"""Executing recorded pipelines: plausible, deterministic results and clear refusals of bad specs."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from service.runners.child import READY_FILE, WarmChild, run_in_child, run_request
from service.runners.executors import ExecutionError, ExecutionRequest, ExecutionResult, execute

CANCER_FEATURES = [f"f{i}" for i in range(30)]
DIABETES_FEATURES = [f"x{i}" for i in range(10)]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_breast_cancer()
    rows = [[*map(float, x), int(y)] for x, y in zip(data.data, data.target, strict=True)]
    return _write_csv(tmp_path_factory.mktemp("data") / "cancer.csv", [*CANCER_FEATURES, "label"], rows)


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_diabetes()
    rows = [[*map(float, x), float(y)] for x, y in zip(data.data, data.target, strict=True)]
    return _write_csv(tmp_path_factory.mktemp("data") / "diabetes.csv", [*DIABETES_FEATURES, "progression"], rows)


@pytest.fixture(scope="module")
def colours_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(200):
        colour = ["red", "green", "blue"][i % 3]
        size = "" if i % 17 == 0 else round(float(rng.normal(10, 2)), 3)
        rows.append([colour, size, int(colour == "red")])
    return _write_csv(tmp_path_factory.mktemp("data") / "colours.csv", ["colour", "size", "is_red"], rows)


def _sklearn_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "features": CANCER_FEATURES,
        "target": "label",
        "task": "classification",
        "estimator": "sklearn.ensemble.GradientBoostingClassifier",
        "estimator_params": {"n_estimators": 40, "max_depth": 2},
    }
    return spec | overrides


def _request(
    tmp_path: Path,
    kind: str,
    spec: dict[str, Any],
    datasets: list[Path],
    *,
    params: dict[str, Any] | None = None,
    seed: int = 7,
    archive: Path | None = None,
    name: str = "out",
) -> ExecutionRequest:
    output = tmp_path / name
    output.mkdir()
    return ExecutionRequest(kind, spec, params or {}, seed, "cpu", datasets, archive, output)


def _values(result: ExecutionResult) -> dict[str, float]:
    return {m["key"]: m["value"] for m in result.metrics}


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    return path


def _python_spec(entrypoint: str = "train:main", **overrides: Any) -> dict[str, Any]:
    return {"entrypoint": entrypoint} | overrides


TRAIN_PY = """
import csv, json, os

def main(request):
    with open(request["datasets"][0]) as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    with open(os.path.join(request["output_dir"], "model.json"), "w") as handle:
        json.dump({"seed": request["seed"], "params": request["params"]}, handle)
    return {"rows": rows, "alpha": request["params"]["alpha"]}

def named(request):
    with open(os.path.join(request["output_dir"], "weights.bin"), "wb") as handle:
        handle.write(b"weights")
    return {"metrics": {"loss": 0.25}, "model_file": "weights.bin"}

def slow(request):
    import time
    time.sleep(10)
    return {"never": 1}

def broken(request):
    print("about to fail")
    raise RuntimeError("the data is cursed")
"""


# -- sklearn -------------------------------------------------------------------------------------


def test_gradient_boosting_scores_plausibly_and_reports_per_class_metrics(tmp_path: Path, cancer_csv: Path) -> None:
    result = execute(_request(tmp_path, "sklearn", _sklearn_spec(), [cancer_csv]))

    metrics = _values(result)
    assert metrics["accuracy"] > 0.9
    assert metrics["roc_auc"] > 0.95
    assert 0 < metrics["log_loss"] < 0.5
    assert {"precision_0", "recall_0", "precision_1", "recall_1"} <= set(metrics)
    assert result.details["n_train"] + result.details["n_validation"] == 569
    assert result.details["estimator_params"]["random_state"] == 7
    predictions = json.loads(result.predictions_file.read_text())
    assert len(predictions["ids"]) == len(predictions["values"]) == result.details["n_validation"]
    assert all(0.0 <= v <= 1.0 for v in predictions["values"])


def test_same_seed_gives_the_same_sklearn_model_bytes(tmp_path: Path, cancer_csv: Path) -> None:
    first = execute(_request(tmp_path, "sklearn", _sklearn_spec(), [cancer_csv], name="a"))
    second = execute(_request(tmp_path, "sklearn", _sklearn_spec(), [cancer_csv], name="b"))

    assert first.model_file.read_bytes() == second.model_file.read_bytes()
    assert first.predictions_file.read_bytes() == second.predictions_file.read_bytes()
    model = pickle.loads(first.model_file.read_bytes())
    assert model.n_estimators == 40


def test_run_params_override_spec_estimator_params(tmp_path: Path, cancer_csv: Path) -> None:
    result = execute(_request(tmp_path, "sklearn", _sklearn_spec(), [cancer_csv], params={"n_estimators": 5}))

    assert pickle.loads(result.model_file.read_bytes()).n_estimators == 5


def test_regression_reports_rmse_mae_and_r2(tmp_path: Path, diabetes_csv: Path) -> None:
    spec = {
        "features": DIABETES_FEATURES,
        "target": "progression",
        "task": "regression",
        "estimator": "sklearn.linear_model.Ridge",
        "estimator_params": {"alpha": 0.1},
    }
    result = execute(_request(tmp_path, "sklearn", spec, [diabetes_csv]))

    metrics = _values(result)
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert 0 < metrics["mae"] < metrics["rmse"] < 80
    assert metrics["r2"] > 0.3
    assert result.details["prediction_kind"] == "value"


def test_one_hot_preprocessing_encodes_a_categorical_column(tmp_path: Path, colours_csv: Path) -> None:
    spec = {
        "features": ["colour", "size"],
        "target": "is_red",
        "task": "classification",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "preprocessing": {"numeric": {"impute": "median", "scale": "standard"}, "categorical": {"one_hot": True}},
    }
    result = execute(_request(tmp_path, "sklearn", spec, [colours_csv]))

    assert _values(result)["accuracy"] == 1.0
    assert result.details["categorical_features"] == ["colour"]
    model = pickle.loads(result.model_file.read_bytes())
    assert list(model.predict(np.array([["red", 9.0], ["blue", 11.0]], dtype=object))) == [1, 0]


def test_a_categorical_column_without_one_hot_is_refused(tmp_path: Path, colours_csv: Path) -> None:
    spec = {
        "features": ["colour", "size"],
        "target": "is_red",
        "task": "classification",
        "estimator": "sklearn.linear_model.LogisticRegression",
    }
    with pytest.raises(ExecutionError, match=r"feature 'colour' is not numeric \(e.g. 'red'\).*one_hot"):
        execute(_request(tmp_path, "sklearn", spec, [colours_csv]))


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        ("sklearn.ensemble.NoSuchClassifier", "unknown estimator 'sklearn.ensemble.NoSuchClassifier'"),
        ("sklearn.no_such_module.Thing", "unknown estimator"),
        ("os.system", "sklearn. namespace"),
        ("builtins.eval", "sklearn. namespace"),
        ("sklearn.utils.Bunch", "is not a scikit-learn estimator class"),
        ("sklearn.linear_model.LinearRegression", "is not a classifier"),
    ],
    ids=["unknown-class", "unknown-module", "os-system", "builtins-eval", "not-an-estimator", "wrong-task"],
)
def test_an_estimator_that_is_not_a_fitting_sklearn_class_is_refused(
    tmp_path: Path, cancer_csv: Path, estimator: str, message: str
) -> None:
    spec = _sklearn_spec(estimator=estimator, estimator_params={})

    with pytest.raises(ExecutionError, match=message.replace(".", r"\.").replace("(", r"\(")):
        execute(_request(tmp_path, "sklearn", spec, [cancer_csv]))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": "many"}, "parameter 'n_estimators' of GradientBoostingClassifier must be like its default"),
        ({"warm_start": 1}, "parameter 'warm_start'"),
        ({"n_trees": 3}, "unknown parameter 'n_trees' for GradientBoostingClassifier"),
        ({"n_estimators": -3}, "could not be fitted: The 'n_estimators' parameter"),
    ],
    ids=["str-for-int", "int-for-bool", "unknown-name", "out-of-range"],
)
def test_a_parameter_of_the_wrong_type_or_name_is_refused(
    tmp_path: Path, cancer_csv: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExecutionError, match=message):
        execute(_request(tmp_path, "sklearn", _sklearn_spec(), [cancer_csv], params=params))


def test_a_missing_target_column_is_named(tmp_path: Path, cancer_csv: Path) -> None:
    with pytest.raises(ExecutionError, match=r"target column 'diagnosis' not found in cancer\.csv"):
        execute(_request(tmp_path, "sklearn", _sklearn_spec(target="diagnosis"), [cancer_csv]))


def test_a_missing_feature_column_is_named(tmp_path: Path, cancer_csv: Path) -> None:
    spec = _sklearn_spec(features=[*CANCER_FEATURES[:3], "tumour_colour"])

    with pytest.raises(ExecutionError, match=r"feature column 'tumour_colour' not found in cancer\.csv"):
        execute(_request(tmp_path, "sklearn", spec, [cancer_csv]))


# -- torch ---------------------------------------------------------------------------------------


def _torch_spec() -> dict[str, Any]:
    return {"features": CANCER_FEATURES, "target": "label", "task": "classification", "hidden_layers": [16, 8]}


def test_torch_runs_with_the_same_seed_give_identical_model_bytes_and_predictions(
    tmp_path: Path, cancer_csv: Path
) -> None:
    params = {"epochs": 4, "batch_size": 32, "learning_rate": 0.01}
    first = execute(_request(tmp_path, "torch", _torch_spec(), [cancer_csv], params=params, name="a"))
    second = execute(_request(tmp_path, "torch", _torch_spec(), [cancer_csv], params=params, name="b"))
    other_seed = execute(_request(tmp_path, "torch", _torch_spec(), [cancer_csv], params=params, seed=8, name="c"))

    assert first.model_file.name == "model.pt"
    assert first.model_file.read_bytes() == second.model_file.read_bytes()
    assert first.predictions_file.read_bytes() == second.predictions_file.read_bytes()
    assert first.model_file.read_bytes() != other_seed.model_file.read_bytes()
    assert _values(first)["accuracy"] > 0.9
    assert first.details["determinism"]["use_deterministic_algorithms"] is True
    assert first.details["determinism"]["cudnn_benchmark"] is False


def test_torch_reports_each_epoch_through_progress_as_it_happens(tmp_path: Path, cancer_csv: Path) -> None:
    batches: list[list[dict[str, Any]]] = []
    params = {"epochs": 3, "optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.05}

    result = execute(_request(tmp_path, "torch", _torch_spec(), [cancer_csv], params=params), batches.append)

    assert [[(p["key"], p["step"]) for p in batch] for batch in batches] == [
        [("train_loss", epoch), ("val_loss", epoch), ("val_accuracy", epoch)] for epoch in (1, 2, 3)
    ]
    live = result.details["metrics_reported_live"]
    assert result.metrics[:live] == [p for batch in batches for p in batch]
    assert {"accuracy", "roc_auc", "log_loss"} <= {p["key"] for p in result.metrics[live:]}


def test_torch_regression_reports_rmse_per_epoch(tmp_path: Path, diabetes_csv: Path) -> None:
    spec = {"features": DIABETES_FEATURES, "target": "progression", "task": "regression", "hidden_layers": [8]}

    result = execute(_request(tmp_path, "torch", spec, [diabetes_csv], params={"epochs": 2}))

    assert [p["step"] for p in result.metrics if p["key"] == "val_rmse"] == [1, 2]
    assert {"rmse", "mae", "r2"} <= set(_values(result))


def test_torch_refuses_an_unknown_training_parameter(tmp_path: Path, cancer_csv: Path) -> None:
    with pytest.raises(ExecutionError, match="unknown parameter 'dropout' for the torch kind"):
        execute(_request(tmp_path, "torch", _torch_spec(), [cancer_csv], params={"dropout": 0.5}))


# -- python --------------------------------------------------------------------------------------


def test_python_entrypoint_returns_metrics_and_writes_a_model(tmp_path: Path, cancer_csv: Path) -> None:
    archive = _zip(tmp_path / "code.zip", {"train.py": TRAIN_PY})

    result = execute(_request(tmp_path, "python", _python_spec(), [cancer_csv], params={"alpha": 0.5}, archive=archive))

    assert _values(result) == {"rows": 569.0, "alpha": 0.5}
    assert result.model_file.name == "model.json"
    assert json.loads(result.model_file.read_text()) == {"seed": 7, "params": {"alpha": 0.5}}
    assert json.loads(result.predictions_file.read_text()) == {"ids": [], "values": []}


def test_python_entrypoint_may_name_its_model_file(tmp_path: Path, cancer_csv: Path) -> None:
    archive = _zip(tmp_path / "code.zip", {"train.py": TRAIN_PY})

    result = execute(_request(tmp_path, "python", _python_spec("train:named"), [cancer_csv], archive=archive))

    assert _values(result) == {"loss": 0.25}
    assert result.model_file.read_bytes() == b"weights"


def test_python_entrypoint_in_a_package_of_a_tar_gz_archive(tmp_path: Path) -> None:
    archive = tmp_path / "code.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for name, text in {"pkg/__init__.py": "", "pkg/job.py": TRAIN_PY}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            bundle.addfile(info, io.BytesIO(text.encode()))

    result = execute(_request(tmp_path, "python", _python_spec("pkg.job:named"), [], archive=archive))

    assert _values(result) == {"loss": 0.25}


@pytest.mark.parametrize("entrypoint", ["train:nope", "missing_module:main"])
def test_an_entrypoint_that_does_not_exist_is_named(tmp_path: Path, entrypoint: str) -> None:
    archive = _zip(tmp_path / "code.zip", {"train.py": TRAIN_PY})

    with pytest.raises(ExecutionError, match=f"^entrypoint {entrypoint} not found$"):
        execute(_request(tmp_path, "python", _python_spec(entrypoint), [], archive=archive))


def test_an_entrypoint_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "code.zip", {"train.py": TRAIN_PY})
    started = time.monotonic()

    with pytest.raises(ExecutionError, match=r"^time limit of 1 s exceeded$"):
        execute(_request(tmp_path, "python", _python_spec("train:slow", time_limit_seconds=1), [], archive=archive))

    assert time.monotonic() - started < 5


def test_a_failing_entrypoint_reports_the_tail_of_its_output(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "code.zip", {"train.py": TRAIN_PY})

    with pytest.raises(ExecutionError, match="failed with exit status 1") as caught:
        execute(_request(tmp_path, "python", _python_spec("train:broken"), [], archive=archive))

    assert "about to fail" in str(caught.value)
    assert "RuntimeError: the data is cursed" in str(caught.value)


def _tar_with(path: Path, name: str, link: bool = False) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            bundle.addfile(info)
        else:
            info.size = 4
            bundle.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _zip(d / "a.zip", {"train.py": TRAIN_PY, "../evil.py": "x = 1"}), "'../evil.py' escapes"),
        (lambda d: _zip(d / "a.zip", {"/tmp/evil.py": "x = 1"}), "'/tmp/evil.py' escapes"),
        (lambda d: _tar_with(d / "a.tar.gz", "../evil.py"), "'../evil.py' escapes"),
        (lambda d: _tar_with(d / "a.tar.gz", "passwd", link=True), "'passwd' is a link"),
    ],
    ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-symlink"],
)
def test_an_archive_member_escaping_the_code_folder_is_refused(tmp_path: Path, make: Any, message: str) -> None:
    archive = make(tmp_path)
    request = _request(tmp_path, "python", _python_spec(), [], archive=archive)

    with pytest.raises(ExecutionError, match=message):
        execute(request)

    assert not (request.output_dir / "evil.py").exists()
    assert not (tmp_path / "evil.py").exists()
    assert not (request.output_dir / "code" / "train.py").exists()


# -- the child process ---------------------------------------------------------------------------


def test_a_child_process_writes_every_metric_to_progress_and_a_result(tmp_path: Path, diabetes_csv: Path) -> None:
    spec = {
        "features": DIABETES_FEATURES,
        "target": "progression",
        "task": "regression",
        "estimator": "sklearn.linear_model.LinearRegression",
    }
    execution = run_in_child(_request(tmp_path, "sklearn", spec, [diabetes_csv]), timeout=60)

    result = execution.result()

    assert execution.process.returncode == 0
    assert result.model_file == execution.output_dir / "model.pkl"
    assert json.loads((execution.output_dir / "result.json").read_text())["model_file"] == "model.pkl"
    assert [p for batch in execution.read_progress() for p in batch] == result.metrics


def test_a_warm_child_imports_while_its_request_is_prepared_then_executes_it(
    tmp_path: Path, diabetes_csv: Path
) -> None:
    spec = {
        "features": DIABETES_FEATURES,
        "target": "progression",
        "task": "regression",
        "estimator": "sklearn.linear_model.Ridge",
    }
    output = tmp_path / "out"
    output.mkdir()
    request = ExecutionRequest("sklearn", spec, {}, 7, "cpu", [diabetes_csv], None, output)
    child = WarmChild.start("sklearn", spec, output, "local")
    deadline = time.monotonic() + 60
    while "sklearn/linear_model/_" not in _modules_of(child.process.pid):  # it imported the estimator already
        assert time.monotonic() < deadline and child.process.poll() is None, (output / "child.log").read_text()
        time.sleep(0.1)
    assert not (output / "request.json").exists()
    ready_by = time.monotonic() + 30  # the file follows the imports at once
    while child.ready_at() is None:
        assert time.monotonic() < ready_by, (output / "child.log").read_text()
        time.sleep(0.05)
    ready = child.ready_at()
    assert ready is not None and ready <= time.time()

    execution = child.execute(request, timeout=60)
    result = execution.result()

    assert execution.process.returncode == 0
    assert result.model_file == output / "model.pkl"
    assert json.loads((output / "result.json").read_text())["resources"]["cpu_seconds"] > 0
    assert [p for batch in execution.read_progress() for p in batch] == result.metrics


def test_a_warm_child_whose_request_never_comes_exits_cleanly_or_is_killed(tmp_path: Path) -> None:
    given_up = WarmChild.start("sklearn", _sklearn_spec(), tmp_path, "local")
    given_up._send("", last=True)  # the caller's downloads failed: it closes the pipe

    assert given_up.process.wait(60) == 0
    assert not (tmp_path / "result.json").exists()
    assert given_up.ready_at() is not None  # it had imported before it learned it would not run

    (tmp_path / "b").mkdir()
    killed = WarmChild.start("python", _python_spec("train:main"), tmp_path / "b", "local")
    killed.kill(grace=1)
    assert killed.process.poll() is not None


def _modules_of(pid: int) -> str:
    """The shared objects and files process ``pid`` has mapped (its imported extension modules among them)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_a_child_process_records_an_execution_error_as_a_failed_result(tmp_path: Path, cancer_csv: Path) -> None:
    request = _request(tmp_path, "sklearn", _sklearn_spec(target="diagnosis"), [cancer_csv])

    status = run_request(request)

    assert status == 0
    written = json.loads((request.output_dir / "result.json").read_text())
    assert written.pop("resources")["backend"] == "local"
    assert written == {
        "ok": False,
        "error": "target column 'diagnosis' not found in cancer.csv",
    }


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (bwrap's names the run's folders)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_child_past_its_timeout_is_killed_with_its_entrypoint(tmp_path: Path) -> None:
    code = (
        TRAIN_PY
        + """
def beat_forever(request):
    import os, time
    beats = 0
    while True:
        beats += 1
        with open(os.path.join(request["output_dir"], "beats"), "w") as handle:
            handle.write(str(beats))
        time.sleep(0.05)
"""
    )
    archive = _zip(tmp_path / "code.zip", {"train.py": code})
    spec = _python_spec("train:beat_forever", time_limit_seconds=60)
    request = _request(tmp_path, "python", spec, [], archive=archive)
    beats = request.output_dir / "outputs" / "beats"
    started = time.monotonic()
    execution = run_in_child(request, timeout=3)

    with pytest.raises(ExecutionError, match=r"^time limit of 3 s exceeded$"):
        execution.result()

    while _processes_naming(str(request.output_dir)) and time.monotonic() - started < 8:
        time.sleep(0.1)
    assert _processes_naming(str(request.output_dir)) == []
    last = beats.read_text()
    time.sleep(0.5)
    assert beats.read_text() == last, "the entrypoint still runs after its child was killed"


@pytest.mark.parametrize("planted", ["link-to-zero", "fifo", "huge", "infinite", "text"])
def test_a_ready_file_the_run_planted_neither_hangs_nor_misleads_the_job(tmp_path: Path, planted: str) -> None:
    """The run's code can write in its output folder: what it leaves as the ready file is read as a hint at most."""
    ready = tmp_path / READY_FILE
    if planted == "link-to-zero":
        ready.symlink_to("/dev/zero")
    elif planted == "fifo":
        os.mkfifo(ready)
    elif planted == "huge":
        ready.write_bytes(b"x" * 10_000_000)
    elif planted == "infinite":
        ready.write_text("inf")
    else:
        ready.write_text("soon")
    child = WarmChild(subprocess.Popen(["true"]), tmp_path)
    child.process.wait()

    started = time.monotonic()
    assert child.ready_at() is None
    assert time.monotonic() - started < 5
