"""The torch kind: a built-in tabular MLP, trained deterministically for a seed.

``spec.hidden_layers`` (ReLU between them) make a classifier (cross-entropy)
or a regressor (MSE on the standardized target). Features are standardized with
means and deviations of the training rows only. Seeds, deterministic
algorithms, cuDNN settings, the cuBLAS workspace and a seeded DataLoader make
two runs with the same seed on the same device give the same model bytes;
the flags are recorded in the details. Each epoch's train_loss, val_loss and
val_accuracy (or val_rmse) go to the progress callback as they happen.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.ml.network import mlp
from service.ml.tabular import (
    as_json_value,
    classification_target,
    numeric_features,
    read_table,
    regression_target,
    split_rows,
    validation_split,
    write_predictions,
)
from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult, Progress
from service.runners.scores import classification_scores, point, regression_scores

DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "optimizer": "adam",
    "hidden_layers": [64, 32],
}
CUBLAS_WORKSPACE = ":4096:8"


def training_params(request: ExecutionRequest) -> dict[str, Any]:
    """Built-in defaults, then schema defaults, then the spec's values, then run params; checked."""
    schema = request.spec.get("params_schema") or {}
    from_schema = {k: r["default"] for k, r in schema.items() if isinstance(r, dict) and "default" in r}
    from_spec = {k: request.spec[k] for k in DEFAULTS if k in request.spec}
    merged = DEFAULTS | {k: v for k, v in from_schema.items() if k in DEFAULTS} | from_spec | request.params
    unknown = sorted(set(merged) - set(DEFAULTS))
    if unknown:
        raise ExecutionError(f"unknown parameter {unknown[0]!r} for the torch kind (known: {', '.join(DEFAULTS)})")
    for name in ("epochs", "batch_size"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExecutionError(f"parameter {name!r} must be a positive integer, got {value!r}")
    for name in ("learning_rate", "weight_decay", "momentum"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ExecutionError(f"parameter {name!r} must be a non-negative number, got {value!r}")
    if merged["learning_rate"] == 0:
        raise ExecutionError("parameter 'learning_rate' must be positive")
    if merged["optimizer"] not in ("adam", "sgd", "adamw"):
        raise ExecutionError(f"parameter 'optimizer' must be adam, sgd or adamw, got {merged['optimizer']!r}")
    hidden = merged["hidden_layers"]
    if not isinstance(hidden, list) or not all(type(h) is int and h > 0 for h in hidden):
        raise ExecutionError(f"parameter 'hidden_layers' must be a list of positive widths, got {hidden!r}")
    return merged


@contextmanager
def deterministic(seed: int, device: str) -> Iterator[dict[str, Any]]:
    """Seed every generator and force deterministic kernels; restore the global switches after."""
    import torch

    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield {
            "seed": seed,
            "torch_manual_seed": seed,
            "use_deterministic_algorithms": True,
            "cudnn_deterministic": True,
            "cudnn_benchmark": False,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "dataloader_generator_seed": seed,
            "num_threads": torch.get_num_threads(),
        }
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def _standardize(values: NDArray[np.float64], rows: NDArray[np.int64]) -> tuple[NDArray[np.float64], ...]:
    mean = values[rows].mean(axis=0)
    std = values[rows].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (values - mean) / std, mean, std


def execute_torch(request: ExecutionRequest, progress: Progress) -> ExecutionResult:
    """Train the MLP on the first dataset and score it on a seeded validation split."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if request.device not in ("cpu", "cuda"):
        raise ExecutionError(f"device must be cpu or cuda, got {request.device!r}")
    if request.device == "cuda" and not torch.cuda.is_available():
        raise ExecutionError("cuda requested but torch reports no CUDA device")
    spec, params = request.spec, training_params(request)
    task, features, target = spec["task"], list(spec["features"]), spec["target"]
    fraction = validation_split(spec)
    table = read_table(request.datasets[0], features, target)
    raw_x = numeric_features(table, features, "torch")
    y_raw: NDArray[Any] = (
        classification_target(table, target) if task == "classification" else regression_target(table, target)
    )
    labels: NDArray[Any] = np.unique(y_raw) if task == "classification" else np.empty(0)
    classes = [as_json_value(c) for c in labels]
    if task == "classification" and len(classes) < 2:
        raise ExecutionError(f"target {target!r} has a single class; classification needs two or more")
    train, validation = split_rows(y_raw, task, fraction, request.seed)
    x, x_mean, x_std = _standardize(raw_x, train)
    y_mean, y_std = 0.0, 1.0
    if classes:
        y_all: NDArray[Any] = np.searchsorted(labels, y_raw)
    else:
        y_scaled, y_means, y_stds = _standardize(y_raw.reshape(-1, 1), train)
        y_all, y_mean, y_std = y_scaled.ravel(), float(y_means[0]), float(y_stds[0])
    sizes = [len(features), *params["hidden_layers"], len(classes) if classes else 1]
    device = torch.device(request.device)
    metrics: list[dict[str, Any]] = []

    with deterministic(request.seed, request.device) as flags:
        target_dtype = torch.long if classes else torch.float32
        x_t = torch.tensor(x, dtype=torch.float32)
        y_t = torch.tensor(y_all, dtype=target_dtype)
        generator = torch.Generator().manual_seed(request.seed)
        loader = DataLoader(
            TensorDataset(x_t[train], y_t[train]), batch_size=params["batch_size"], shuffle=True, generator=generator
        )
        net = mlp(sizes).to(device)
        loss_fn: Any = torch.nn.CrossEntropyLoss() if classes else torch.nn.MSELoss()
        opt: torch.optim.Optimizer
        if params["optimizer"] == "sgd":
            opt = torch.optim.SGD(
                net.parameters(),
                lr=params["learning_rate"],
                momentum=params["momentum"],
                weight_decay=params["weight_decay"],
            )
        elif params["optimizer"] == "adamw":
            opt = torch.optim.AdamW(net.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
        else:
            opt = torch.optim.Adam(net.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
        x_val, y_val = x_t[validation].to(device), y_t[validation].to(device)

        def outputs(inputs: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = net(inputs)
            return out if classes else out.squeeze(-1)

        for epoch in range(1, params["epochs"] + 1):
            net.train()
            total, seen = 0.0, 0
            for batch_x, batch_y in loader:
                batch_x, batch_y = batch_x.to(device), batch_y.to(device)
                opt.zero_grad()
                loss = loss_fn(outputs(batch_x), batch_y)
                loss.backward()
                opt.step()
                total += float(loss.item()) * len(batch_x)
                seen += len(batch_x)
            net.eval()
            with torch.no_grad():
                val_out = outputs(x_val)
                epoch_points = [
                    point("train_loss", total / seen, epoch),
                    point("val_loss", loss_fn(val_out, y_val).item(), epoch),
                ]
                if classes:
                    accuracy = (val_out.argmax(dim=1) == y_val).float().mean().item()
                    epoch_points.append(point("val_accuracy", accuracy, epoch))
                else:
                    rmse = float(torch.sqrt(torch.mean((val_out - y_val) ** 2)).item()) * y_std
                    epoch_points.append(point("val_rmse", rmse, epoch))
            metrics += epoch_points
            progress(epoch_points)
        live = len(metrics)

        with torch.no_grad():
            final = outputs(x_val).cpu()
        details: dict[str, Any] = {
            "device": request.device,
            "device_name": torch.cuda.get_device_name(device) if request.device == "cuda" else "cpu",
            "torch_version": torch.__version__,
            "determinism": flags,
            "training_params": params,
            "layer_sizes": sizes,
            "features": features,
            "n_train": len(train),
            "n_validation": len(validation),
            "metrics_reported_live": live,
        }
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}

    step = params["epochs"]
    if classes:
        proba = torch.softmax(final, dim=1).double().numpy()
        predicted = labels[proba.argmax(axis=1)]
        final_points, skipped = classification_scores(y_raw[validation], predicted, proba, classes, step)
        binary = len(classes) == 2
        values = [float(p) for p in proba[:, 1]] if binary else [as_json_value(c) for c in predicted]
        details |= {"classes": classes, "prediction_kind": "probability" if binary else "class"}
        if binary:
            details["positive_class"] = classes[1]
    else:
        predicted_values = final.double().numpy() * y_std + y_mean
        final_points, skipped = regression_scores(y_raw[validation], predicted_values, step)
        values, details["prediction_kind"] = [float(v) for v in predicted_values], "value"
    metrics += final_points
    details["skipped_metrics"] = skipped

    model_file = request.output_dir / "model.pt"
    torch.save(
        {
            "format": "mlledger.mlp.v1",
            "task": task,
            "features": features,
            "classes": classes,
            "layer_sizes": sizes,
            "state_dict": state,
            "feature_mean": torch.tensor(x_mean, dtype=torch.float64),
            "feature_std": torch.tensor(x_std, dtype=torch.float64),
            "target_mean": y_mean,
            "target_std": y_std,
        },
        model_file,
    )
    predictions = write_predictions(request.output_dir / "predictions.json", list(validation), values)
    return ExecutionResult(metrics, model_file, predictions, details)
