"""Models trained elsewhere: skops (with checked trees), ONNX and torch state dicts load without running their
bytes; pickles and malformed trees are refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
from numpy.typing import NDArray
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from service.ml.explain import explainer_for
from service.ml.model_loading import SklearnModel, TorchModel, UnsupportedModel
from service.ml.safe_formats import ONNX, SKOPS, TORCH_STATE_DICT, OnnxModel, client_format, load_client_model

FEATURES = ["a", "b", "c", "d"]
DETAILS: dict[str, Any] = {"task": "classification", "features": FEATURES, "classes": [0, 1]}


def _data() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    X, y = make_classification(300, 4, n_informative=3, n_redundant=0, random_state=0)
    return X, y


def _skops_file(tmp_path: Path, model: Any, name: str = "model.skops") -> Path:
    path = tmp_path / name
    path.write_bytes(skops.io.dumps(model))
    return path


def _with_tree_state(path: Path, change: Any) -> Path:
    """The skops file with the first tree's node array (or its state) changed by ``change(nodes, state)``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__class__") == "Tree":
                state = node["content"]["content"]
                nodes = np.load(io.BytesIO(members[state["nodes"]["file"]]))
                change(nodes, state)
                out = io.BytesIO()
                np.save(out, nodes, allow_pickle=False)
                members[state["nodes"]["file"]] = out.getvalue()
                break
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    members["schema.json"] = json.dumps(schema).encode()
    changed = path.with_name("changed.skops")
    with zipfile.ZipFile(changed, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return changed


def test_a_skops_forest_loads_predicts_as_trained_and_is_explained_by_its_trees(tmp_path: Path) -> None:
    X, y = _data()
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, y)

    model = load_client_model(_skops_file(tmp_path, forest), SKOPS, DETAILS)

    assert isinstance(model, SklearnModel)
    assert np.allclose(model.scores(X[:50]), forest.predict_proba(X[:50]))
    explainer = explainer_for(model, X[:100])
    assert explainer.name == "tree"
    contributions, base = explainer.attributions(X[:5])
    assert np.allclose(base + contributions.sum(axis=1), forest.predict_proba(X[:5])[:, 1], atol=1e-6)


def test_a_skops_gradient_boosting_model_loads(tmp_path: Path) -> None:
    X, y = _data()
    boosted = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(X, y)

    model = load_client_model(_skops_file(tmp_path, boosted), SKOPS, DETAILS)

    assert np.allclose(model.scores(X[:20]), boosted.predict_proba(X[:20]))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda nodes, state: nodes["left_child"].__setitem__(0, 10_000), "beyond its"),
        (lambda nodes, state: nodes["right_child"].__setitem__(0, 0), "not a later node"),
        (lambda nodes, state: nodes["feature"].__setitem__(0, 4), "beyond its 4 features"),
        (lambda nodes, state: nodes["feature"].__setitem__(0, -7), "beyond its 4 features"),
        (lambda nodes, state: nodes["left_child"].__setitem__(0, -1), "one child"),
        (lambda nodes, state: state["node_count"].update(content="100000"), "nodes but stores"),
        (lambda nodes, state: state["max_depth"].update(content="1"), "says depth 1"),
    ],
    ids=["child-out-of-range", "cycle", "feature-too-high", "feature-negative", "one-child", "node-count", "depth"],
)
def test_a_malformed_skops_tree_is_refused_before_it_is_loaded(tmp_path: Path, change: Any, said: str) -> None:
    X, y = _data()
    tree_model = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, y)
    malformed = _with_tree_state(_skops_file(tmp_path, tree_model), change)

    with pytest.raises(UnsupportedModel) as refused:
        load_client_model(malformed, SKOPS, DETAILS)

    assert said in refused.value.detail


def test_a_skops_file_with_a_type_the_service_does_not_trust_is_refused(tmp_path: Path) -> None:
    X, y = _data()
    histogram = HistGradientBoostingClassifier(max_iter=3).fit(X, y)

    with pytest.raises(UnsupportedModel) as refused:
        load_client_model(_skops_file(tmp_path, histogram), SKOPS, DETAILS)

    assert "TreePredictor" in refused.value.detail and "ONNX" in refused.value.detail


def test_a_pickle_is_refused_whatever_its_name(tmp_path: Path) -> None:
    X, y = _data()
    pickled = tmp_path / "model.skops"
    pickled.write_bytes(pickle.dumps(LogisticRegression().fit(X, y)))

    with pytest.raises(UnsupportedModel) as by_content:
        load_client_model(pickled, SKOPS, DETAILS)
    with pytest.raises(UnsupportedModel) as by_name:
        client_format("model.pkl")

    assert "pickle" in by_content.value.detail
    assert "pickles are never loaded" in by_name.value.detail
    assert client_format("m.SKOPS") == SKOPS and client_format("m.onnx") == ONNX
    assert client_format("weights.pth") == TORCH_STATE_DICT


def _onnx_file(tmp_path: Path, model: Any) -> Path:
    from skl2onnx import to_onnx

    proto = to_onnx(model, np.zeros((1, 4), dtype=np.float32), options={id(model): {"zipmap": False}})
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def test_an_onnx_model_scores_as_the_original_and_gets_additive_permutation_explanations(tmp_path: Path) -> None:
    X, y = _data()
    boosted = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(X, y)

    model = load_client_model(_onnx_file(tmp_path, boosted), ONNX, DETAILS)

    assert isinstance(model, OnnxModel)
    assert np.allclose(model.scores(X[:50]), boosted.predict_proba(X[:50]), atol=1e-5)
    explainer = explainer_for(model, X[:100])
    assert explainer.name == "permutation" and explainer.output_space == "probability"
    contributions, base = explainer.attributions(X[:3])
    assert np.allclose(base + contributions.sum(axis=1), model.scores(X[:3])[:, 1], atol=1e-6)


def test_an_onnx_model_of_another_width_or_a_foreign_operator_domain_is_refused(tmp_path: Path) -> None:
    import onnx

    X, y = _data()
    path = _onnx_file(tmp_path, LogisticRegression().fit(X, y))
    with pytest.raises(UnsupportedModel) as wrong_width:
        load_client_model(path, ONNX, {**DETAILS, "features": ["a", "b", "c"]})
    proto = onnx.load_model_from_string(path.read_bytes())
    proto.opset_import.append(onnx.helper.make_opsetid("com.example.custom", 1))
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(proto.SerializeToString())
    with pytest.raises(UnsupportedModel) as custom:
        load_client_model(foreign, ONNX, DETAILS)

    assert "matrix of 3 features" in wrong_width.value.detail
    assert "com.example.custom" in custom.value.detail


def test_a_torch_state_dict_loads_with_the_described_network(tmp_path: Path) -> None:
    import torch

    from service.ml.network import mlp

    network = mlp([4, 8, 2])
    path = tmp_path / "weights.pt"
    torch.save(network.state_dict(), path)
    details = {**DETAILS, "layer_sizes": [4, 8, 2], "feature_mean": [0.0] * 4, "feature_std": [1.0] * 4}

    model = load_client_model(path, TORCH_STATE_DICT, details)

    X, _ = _data()
    assert isinstance(model, TorchModel)
    with torch.no_grad():
        expected = torch.softmax(network(torch.tensor(X[:5], dtype=torch.float32)), dim=1).double().numpy()
    assert np.allclose(model.scores(X[:5]), expected, atol=1e-6)
    with pytest.raises(UnsupportedModel):
        load_client_model(path, TORCH_STATE_DICT, {**details, "layer_sizes": [4, 16, 2]})
