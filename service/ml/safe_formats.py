"""Models trained elsewhere, loaded without executing their bytes: skops, ONNX and torch state dicts.

A client-reported run may upload any bytes, so its models are loaded only from
formats whose loading runs no code the file brings:

- ``.skops``: a scikit-learn estimator, built by skops from the types the
  service trusts (:mod:`service.ml.skops_trust`: skops' defaults, and trees
  after their node arrays are checked);
- ``.onnx``: an ONNX graph run by onnxruntime on the CPU, with standard
  operator domains only, no external data (a path the model names would be
  read from the server's disk) and one float input of the features' width;
- ``.pt`` / ``.pth``: a torch ``state_dict`` read with ``weights_only=True``,
  the network rebuilt from the layer sizes the run's description gives
  (:mod:`service.ml.network`).

Pickles (``.pkl``, ``.joblib``, ...) from client-reported runs are never
loaded. What the file alone does not say (features, task, classes, the
network's layout, its standardisation) comes from the run's description
(``serving.json``, :func:`read_description`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from domain.errors import InvalidPayload
from service.ml.model_loading import (
    CLASSIFICATION,
    PICKLE_PROTO,
    REGRESSION,
    LoadedModel,
    SklearnModel,
    TorchModel,
    UnsupportedModel,
    described_classes,
    described_features,
    sklearn_model,
    torch_model,
)

SKOPS, ONNX, TORCH_STATE_DICT = "skops", "onnx", "torch-state-dict"
SUFFIXES = {".skops": SKOPS, ".onnx": ONNX, ".pt": TORCH_STATE_DICT, ".pth": TORCH_STATE_DICT}
DESCRIPTION_FILE = "serving.json"
MAX_DESCRIPTION_BYTES = 1 << 20
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_ONNX_FLOAT, _ONNX_DOUBLE = 1, 11  # TensorProto.FLOAT, TensorProto.DOUBLE


def client_format(artifact_name: str) -> str:
    """The safe format of a client-reported model artifact, told by its name; pickles and others are refused."""
    suffix = Path(artifact_name).suffix.lower()
    found = SUFFIXES.get(suffix)
    if found is None:
        raise UnsupportedModel(
            f"{artifact_name!r} is not served: models of client-reported runs are served only from formats that "
            "load without running code (.skops, .onnx, or a torch state dict .pt/.pth); pickles are never loaded"
        )
    return found


def read_description(data: bytes) -> dict[str, Any]:
    """The run's ``serving.json``: a JSON object of at most 1 MiB."""
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise UnsupportedModel(f"{DESCRIPTION_FILE} is over {MAX_DESCRIPTION_BYTES >> 20} MiB")
    try:
        described = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnsupportedModel(f"{DESCRIPTION_FILE} is not JSON: {exc}") from None
    if not isinstance(described, dict):
        raise UnsupportedModel(f"{DESCRIPTION_FILE} must be a JSON object")
    return described


def load_client_model(path: Path, form: str, details: Mapping[str, Any]) -> LoadedModel:
    """Load a client-reported model file of format ``form`` (see :func:`client_format`), described by ``details``."""
    with path.open("rb") as handle:
        head = handle.read(2)
    if head[:1] == bytes([PICKLE_PROTO]):
        raise UnsupportedModel(f"{path.name} is a pickle; pickles from client-reported runs are never loaded")
    declared = details.get("format", form)
    if declared != form:
        raise UnsupportedModel(f"{DESCRIPTION_FILE} says format {declared!r}, the artifact's name says {form!r}")
    if form == SKOPS:
        return load_skops(path, details)
    if form == ONNX:
        return load_onnx(path, details)
    return load_torch_state_dict(path, details)


def load_skops(path: Path, details: Mapping[str, Any]) -> SklearnModel:
    """A scikit-learn estimator from a skops file, trusting only what :mod:`service.ml.skops_trust` allows."""
    import skops.io

    from service.ml.skops_trust import check_loaded_trees, trusted_types

    trusted = trusted_types(path)
    try:
        model = skops.io.load(path, trusted=trusted)
    except Exception as exc:
        raise UnsupportedModel(f"{path.name} is not a loadable skops file: {exc}") from None
    check_loaded_trees(model)
    return sklearn_model(model, details, path.name)


class OnnxModel(LoadedModel):
    """An ONNX graph on onnxruntime's CPU provider: a float matrix in, class probabilities or values out."""

    kind = "onnx"

    def __init__(self, session: Any, input_name: str, input_type: Any, output_name: str, **fields: Any) -> None:
        super().__init__(**fields)
        self._session = session
        self._input_name = input_name
        self._input_type = input_type
        self._output_name = output_name

    def scores(self, X: NDArray[Any]) -> NDArray[np.float64]:
        """Class probabilities ``(n, len(classes))``, or values ``(n,)`` for regression."""
        raw = np.asarray(X, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.features):
            raise InvalidPayload(f"expected a matrix of {len(self.features)} features, got shape {raw.shape}")
        if np.isnan(raw).any():
            row, column = np.argwhere(np.isnan(raw))[0]
            name = self.features[column]
            raise InvalidPayload(
                f"feature {name!r} of row {row} is missing; the ONNX model needs every feature",
                field=f"rows.{row}.{name}",
            )
        try:
            (out,) = self._session.run([self._output_name], {self._input_name: raw.astype(self._input_type)})
        except Exception as exc:
            raise InvalidPayload(f"the model cannot score these rows: {' '.join(str(exc).split())}") from None
        result = np.asarray(out, dtype=np.float64)
        if self.classes is None:
            result = result.reshape(len(raw))
        elif result.shape != (len(raw), len(self.classes)):
            raise UnsupportedModel(
                f"the ONNX output {self._output_name!r} has shape {result.shape}, "
                f"not one probability per class ({len(self.classes)})"
            )
        return result


def load_onnx(path: Path, details: Mapping[str, Any]) -> OnnxModel:
    """An ONNX model: standard operators, no external data, one float input as wide as the features."""
    import onnx
    import onnxruntime
    from onnx import external_data_helper

    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise UnsupportedModel(f"{path.name} is not a valid ONNX model: {' '.join(str(exc).split())}") from None
    domains = {opset.domain for opset in proto.opset_import} | {f.domain for f in proto.functions}
    if not domains <= ONNX_DOMAINS:
        raise UnsupportedModel(
            f"{path.name} uses operator domains the service does not run: {sorted(domains - ONNX_DOMAINS)}"
        )
    # onnx's own walk over every tensor, subgraphs and attributes included (it has no public one)
    if any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(proto)):
        raise UnsupportedModel(f"{path.name} refers to external data files; embed the weights in the model")
    features = described_features(details)
    if details.get("categorical_features"):
        raise UnsupportedModel("an ONNX model is served with numeric features only")
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModel(f"{path.name} takes {len(inputs)} inputs; serving gives one matrix of the features")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type not in (_ONNX_FLOAT, _ONNX_DOUBLE):
        raise UnsupportedModel(f"{path.name}'s input is not a float tensor")
    dims = tensor.shape.dim
    if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value != len(features)):
        raise UnsupportedModel(f"{path.name}'s input is not a matrix of {len(features)} features")
    task = details.get("task")
    if task not in (CLASSIFICATION, REGRESSION):
        raise UnsupportedModel(f"the run's {DESCRIPTION_FILE} must say task: classification or regression")
    outputs = [o.name for o in proto.graph.output]
    default = "probabilities" if task == CLASSIFICATION else outputs[0]
    output = details.get("output", default)
    if output not in outputs:
        raise UnsupportedModel(f"{path.name} has no output {output!r} (it has {', '.join(outputs)})")
    classes: list[Any] | None = None
    positive = None
    if task == CLASSIFICATION:
        recorded = details.get("classes")
        if not isinstance(recorded, list):
            raise UnsupportedModel(f"the run's {DESCRIPTION_FILE} must list the classifier's classes")
        classes, positive = described_classes(details, list(recorded))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # requests are batched and processes run per core
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UnsupportedModel(f"onnxruntime cannot run {path.name}: {' '.join(str(exc).split())}") from None
    input_type = np.float32 if tensor.elem_type == _ONNX_FLOAT else np.float64
    model = OnnxModel(
        session,
        inputs[0].name,
        input_type,
        output,
        task=task,
        features=features,
        categorical=[],
        classes=classes,
        positive_class=positive,
    )
    model.scores(np.zeros((1, len(features))))  # the output's shape is checked once now, not per request
    return model


def load_torch_state_dict(path: Path, details: Mapping[str, Any]) -> TorchModel:
    """The MLP of :mod:`service.ml.network` with the layer sizes and standardisation the description gives."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsupportedModel(f"{path.name} is not a torch file of plain weights: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsupportedModel(f"{path.name} is not a state dict (names of tensors)")
    features = described_features(details)
    saved = {
        "task": details.get("task"),
        "features": features,
        "classes": details.get("classes"),
        "layer_sizes": details.get("layer_sizes"),
        "state_dict": state,
        "feature_mean": details.get("feature_mean", [0.0] * len(features)),
        "feature_std": details.get("feature_std", [1.0] * len(features)),
        "target_mean": details.get("target_mean", 0.0),
        "target_std": details.get("target_std", 1.0),
    }
    if saved["task"] not in (CLASSIFICATION, REGRESSION):
        raise UnsupportedModel(f"the run's {DESCRIPTION_FILE} must say task: classification or regression")
    return torch_model(saved, details, path.name)
