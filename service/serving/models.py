"""Served models: each version is loaded once (model, input schema, explainer) and cached.

Two kinds of versions are served, every file read from the blob store after
its digest is checked:

- a model a ledger runner trained: ``model.pkl`` or ``model.pt`` with the run's
  ``execution.json`` (what the runner recorded about it);
- a model trained elsewhere, from a client-reported run: a file in a format
  that loads without running its bytes (``.skops``, ``.onnx``, a torch state
  dict; :mod:`service.ml.safe_formats`) with the run's ``serving.json``
  describing it. A client-reported run may upload any bytes, so a pickle of
  one is never loaded.

Explanations need representative rows: the run's first dataset version, or
the ``background`` rows of a client model's ``serving.json``.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from domain.dataset import DatasetVersion
from domain.errors import LedgerError, RuleViolated
from domain.integrity.canonical import NumberRecordEncoder
from domain.model import ModelVersion
from domain.run import Run
from service.application.ledger_core import LedgerCore
from service.ml.explain import ModelExplainer, explainer_for
from service.ml.model_loading import LoadedModel, UnsupportedModel, load_model
from service.ml.safe_formats import DESCRIPTION_FILE, client_format, load_client_model, read_description
from service.ml.tabular import MISSING, read_table
from service.serving.input_schema import InputSchema
from service.store.blobs import BlobStore

log = logging.getLogger(__name__)

MODEL_FILES = ("model.pkl", "model.pt")
DETAILS_FILE = "execution.json"
BACKGROUND_ROWS = 100
MAX_DESCRIBED_BACKGROUND = 1_000  # rows of a client model's described background


class NotServable(RuleViolated):
    """The version's artifact cannot be served."""

    title = "Model not servable"


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version, ready to predict and explain."""

    version_id: str
    model_name: str
    number: int
    input_schema: list[dict[str, Any]]
    model: LoadedModel
    explainer: ModelExplainer | None
    run_id: str
    dataset_version_id: str | None
    details: dict[str, Any]

    @property
    def features(self) -> list[str]:
        """The model's features, in matrix order."""
        return list(self.model.features)

    @cached_property
    def schema(self) -> InputSchema:
        """The input schema with its fast paths and its canonical encoder."""
        return InputSchema(self.input_schema)

    @property
    def numeric_names(self) -> frozenset[str] | None:
        """The numeric input columns as a set when rows check in bulk (:attr:`InputSchema.numeric_names`)."""
        return self.schema.numeric_names

    @property
    def input_encoder(self) -> NumberRecordEncoder:
        """Canonical JSON of this version's input rows (fast for all-numeric rows, exact for any)."""
        return self.schema.encoder


def parse_cell(value: str, categorical: bool) -> Any:
    """A CSV cell as a model input value (None when missing)."""
    text = value.strip()
    if text.lower() in MISSING:
        return None
    if categorical:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def effective_schema(version: ModelVersion, model: LoadedModel) -> list[dict[str, Any]]:
    """The registered input schema, or one derived from the model's features."""
    if version.input_schema:
        return [dict(column) for column in version.input_schema]
    return [{"name": name, "type": "string" if name in model.categorical else "number"} for name in model.features]


class ModelCache:
    """Loads served versions on first use and keeps the most recent ones."""

    def __init__(self, ledger: LedgerCore, blobs: BlobStore, size: int = 8) -> None:
        self._ledger = ledger
        self._blobs = blobs
        self._size = size
        # A serving process sets this: what a load built (the model, its explainer, the libraries
        # they imported) then joins the heap the cyclic collector no longer scans (gc.freeze).
        # Otherwise every full collection walks it again while requests allocate: tens of
        # milliseconds, paid by the requests of that moment.
        self.freeze_loaded = False
        self._models: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, version: ModelVersion) -> ServedModel:
        """The served form of ``version``, loading it once even under concurrent requests."""
        key = str(version.id)
        with self._lock:
            served = self._models.get(key)
            if served is not None:
                self._models.move_to_end(key)
                return served
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                served = self._models.get(key)
            if served is None:
                served = self._load(version)
                if self.freeze_loaded:
                    gc.collect()  # garbage is not frozen
                    gc.freeze()
                with self._lock:
                    self._models[key] = served
                    while len(self._models) > self._size:
                        self._models.popitem(last=False)
            with self._lock:
                self._loading.pop(key, None)
        return served

    def loaded(self) -> list[str]:
        """The ids of the versions loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    def preload(self, version_ids: Sequence[str]) -> int:
        """Load these versions now (those that cannot be served are skipped); how many are loaded.

        A serving process does it for what its deployments serve when it
        starts, so the first requests do not wait for the model to load; a
        request that arrives meanwhile waits for the same load.
        """
        started, loaded = time.perf_counter(), 0
        for version_id in version_ids[: self._size]:
            try:
                self.get(self._ledger.get(version_id, ModelVersion))
            except Exception as exc:  # the deployment's requests will meet (and report) the same problem
                log.warning("model version %s was not preloaded: %s", version_id, exc)
                continue
            loaded += 1
        if version_ids:
            log.info(
                "preloaded %d of %d served model versions in %.2f s",
                loaded,
                len(version_ids),
                time.perf_counter() - started,
            )
        return loaded

    def _load(self, version: ModelVersion) -> ServedModel:
        run: Run = self._ledger.get(version.run_id, Run)
        if run.mode != "runner" or run.runner_id is None:
            return self._load_client(version, run)
        where = f"{version.model_name} v{version.number}"
        if version.artifact_name not in MODEL_FILES:
            raise NotServable(
                f"{where} names artifact {version.artifact_name!r}; serving loads {' or '.join(MODEL_FILES)}"
            )
        if DETAILS_FILE not in run.artifacts:
            raise NotServable(f"run {run.id} has no {DETAILS_FILE}; it cannot be served")
        details = json.loads(b"".join(self._blobs.read_verified(run.artifacts[DETAILS_FILE])))
        model_blob = self._blobs.verify(version.artifact_digest)
        model = load_model(model_blob.path, {**details, "artifact_name": version.artifact_name})
        return self._served(version, run, model, details)

    def _load_client(self, version: ModelVersion, run: Run) -> ServedModel:
        """A model trained elsewhere, in a format that loads without running its bytes, as ``serving.json`` says."""
        where = f"{version.model_name} v{version.number}"
        try:
            form = client_format(version.artifact_name)
        except UnsupportedModel as exc:
            raise NotServable(f"{where} comes from a client-reported run: {exc.detail}") from None
        if DESCRIPTION_FILE not in run.artifacts:
            raise NotServable(
                f"{where} comes from a client-reported run without {DESCRIPTION_FILE}; upload one describing the "
                "model (task, features, classes) to serve it"
            )
        details = read_description(b"".join(self._blobs.read_verified(run.artifacts[DESCRIPTION_FILE])))
        if "features" not in details and version.input_schema:
            details["features"] = [str(column["name"]) for column in version.input_schema]
        model_blob = self._blobs.verify(version.artifact_digest)
        model = load_client_model(model_blob.path, form, details)
        return self._served(version, run, model, details)

    def _served(self, version: ModelVersion, run: Run, model: LoadedModel, details: dict[str, Any]) -> ServedModel:
        """The loaded model with its schema and explainer."""
        dataset_id = run.dataset_version_ids[0] if run.dataset_version_ids else None
        background = self._background(model, dataset_id, details)
        explainer = None
        if background is not None:
            try:
                explainer = explainer_for(model, background, seed=run.seed)
            except LedgerError:
                explainer = None
        return ServedModel(
            version_id=str(version.id),
            model_name=version.model_name,
            number=version.number,
            input_schema=effective_schema(version, model),
            model=model,
            explainer=explainer,
            run_id=str(run.id),
            dataset_version_id=dataset_id,
            details=details,
        )

    def training_rows(self, dataset_version_id: str, columns: list[str], categorical: set[str]) -> list[dict[str, Any]]:
        """Every row of a dataset version's CSV, parsed, restricted to ``columns``."""
        dataset: DatasetVersion = self._ledger.get(dataset_version_id, DatasetVersion)
        blob = self._blobs.verify(dataset.digest)
        table = read_table(blob.path, columns, columns[-1])
        return [
            {name: parse_cell(table.columns[name][i], name in categorical) for name in columns}
            for i in range(table.n_rows)
        ]

    def _background(self, model: LoadedModel, dataset_id: str | None, details: dict[str, Any]) -> Any:
        """A seeded sample of the training data for explainers that need one (or the described background rows)."""
        described = details.get("background")
        if dataset_id is None and isinstance(described, list) and described:
            try:
                return model.matrix(described[:MAX_DESCRIBED_BACKGROUND])
            except LedgerError:
                return None
        if dataset_id is None:
            return None
        features = list(model.features)
        try:
            rows = self.training_rows(dataset_id, features, set(model.categorical))
        except LedgerError:
            return None
        if not rows:
            return None
        rng = np.random.default_rng(0)
        picked = sorted(rng.choice(len(rows), size=min(BACKGROUND_ROWS, len(rows)), replace=False).tolist())
        return model.matrix([{f: rows[i][f] for f in features} for i in picked])
