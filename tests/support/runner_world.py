"""Helpers for runner tests: data, pipelines and waiting for runs."""

from __future__ import annotations

import csv
import io
import io as _io
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from domain.run import Run
from service.bootstrap import Services
from service.runners.runner import Runner

FEATURES = ["x1", "x2", "x3"]


def small_csv(rows: int = 120, seed: int = 3) -> bytes:
    """A small, learnable binary classification table."""
    import random

    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*FEATURES, "label"])
    for _ in range(rows):
        x = [round(rng.uniform(-1, 1), 6) for _ in FEATURES]
        writer.writerow([*x, int(x[0] + 0.5 * x[1] > 0)])
    return out.getvalue().encode()


def dataset(services: Services, name: str = "small", data: bytes | None = None) -> str:
    """Store and register a dataset; return its version id."""
    blob = services.blobs.put_bytes(data or small_csv())
    return services.ledger.register_dataset_version(
        name=name,
        digest=blob.digest,
        size=blob.size,
        format="csv",
        schema=[],
        row_count=0,
        datasheet={},
        source="test",
        actor="alice",
    ).id


def sklearn_pipeline(
    services: Services,
    name: str = "logreg",
    estimator: str = "sklearn.linear_model.LogisticRegression",
    target: str = "label",
) -> str:
    """Record an sklearn pipeline spec; return its name."""
    services.ledger.add_pipeline_spec(
        name=name,
        kind="sklearn",
        spec={"estimator": estimator, "features": FEATURES, "target": target, "task": "classification"},
        actor="alice",
    )
    return name


def torch_pipeline(services: Services, name: str = "mlp") -> str:
    """Record a torch MLP pipeline spec; return its name."""
    services.ledger.add_pipeline_spec(
        name=name,
        kind="torch",
        spec={"features": FEATURES, "target": "label", "task": "classification", "hidden_layers": [8]},
        actor="alice",
    )
    return name


def python_pipeline(services: Services, name: str, entrypoint: str, time_limit: float = 60) -> str:
    """Record a python pipeline spec; return its name."""
    services.ledger.add_pipeline_spec(
        name=name, kind="python", spec={"entrypoint": entrypoint, "time_limit_seconds": time_limit}, actor="alice"
    )
    return name


def code_archive(services: Services, source: str) -> str:
    """Store a zip holding ``train.py`` and register a code version; return its id."""
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", source)
    blob = services.blobs.put_bytes(buffer.getvalue())
    return services.ledger.register_code_version(
        repository="https://git.example/t",
        commit="abcdef1",
        archive_digest=blob.digest,
        entrypoint=None,
        actor="alice",
    ).id


def request(services: Services, pipeline: str, dataset_id: str, **fields: Any) -> str:
    """Request a runner run; return its id."""
    values: dict[str, Any] = {
        "name": pipeline,
        "mode": "runner",
        "pipeline": pipeline,
        "pipeline_version": None,
        "dataset_version_ids": [dataset_id],
        "code_version_id": None,
        "params": {},
        "seed": 11,
        "device": "auto",
        "actor": "alice",
    }
    values.update(fields)
    return services.ledger.start_run(**values).id


def wait_finished(services: Services, run_ids: list[str], timeout: float = 120) -> list[Run]:
    """Wait until every run has ended; return them."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [services.ledger.get(run_id, Run) for run_id in run_ids]
        if all(run.finished for run in runs):
            return runs
        assert time.monotonic() < deadline, [(str(r.id), r.status) for r in runs]
        time.sleep(0.1)


@contextmanager
def running(services: Services, **options: Any) -> Iterator[Runner]:
    """A runner serving in a thread for the duration of the block."""
    runner = Runner(services, poll_interval=0.05, heartbeat_interval=0.5, **options)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(timeout=60)
