"""Durability: SIGKILL the server during a prediction load; every prediction answered 2xx is in the ledger.

A real ``python -m service serve`` process trains (with its own runner), serves
and records; eight clients send single and small-batch predictions with
unique request ids; the server is killed with SIGKILL after about two seconds
of load. An answer leaves the server only after its group commit, so every
prediction id a client received must be in the ledger afterwards, and the
ledger must still verify.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.ledger import REPO, drop_schema, make_settings, require_postgres, run_cli, settings_env
from support.serving_world import FEATURES, MODEL, approve_all, credit_csv, credit_rows, features_of, make_people

from domain.errors import NotFound
from domain.prediction import Prediction
from mlledger.client import LedgerClient
from service.bootstrap import open_services
from service.settings import Settings

CLIENTS = 8
LOAD_SECONDS = 2.0
BATCH = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``python -m service serve`` subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str


def _start_server(settings: Settings, log: Path) -> Server:
    port = _free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            env=settings_env(settings),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the server exited:\n{log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return Server(process, base_url)
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


@pytest.fixture
def ledger_settings(tmp_path: Path) -> Iterator[Settings]:
    require_postgres()
    settings = make_settings("postgres", tmp_path / "data")
    open_services(settings, migrate=True).close()
    yield settings
    drop_schema(settings.database_schema)


def _deploy(base_url: str) -> str:
    """Train on the server's runner, register, approve twice, deploy; return the predictor's API key."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        world = make_people(http)  # a TestClient or any httpx client pointed at the server
        alice = world.people["alice"].client
        dataset = alice.upload_dataset("credit", credit_csv(), datasheet={"motivation": "credit decisions"})
        spec = {
            "estimator": "sklearn.ensemble.GradientBoostingClassifier",
            "estimator_params": {"n_estimators": 30, "max_depth": 2},
            "features": FEATURES,
            "target": "approved",
            "task": "classification",
        }
        alice.add_pipeline_spec("credit-gbm", "sklearn", spec)
        run = alice.start_run(
            name="credit", mode="runner", pipeline="credit-gbm", dataset_version_ids=[dataset.id], seed=3
        )
        assert alice.wait_for_run(run.id, timeout=120)["status"] == "succeeded"
        number, _ = alice.register_model_version(
            MODEL,
            run.id,
            "model.pkl",
            input_schema=[{"name": f, "type": "number"} for f in FEATURES],
            policy={"min_impact_ratio": None},
        )
        approve_all(world, [number])
        world.people["olivia"].client.deploy(MODEL, "champion", number, reason="durability test")
        return world.issue_key(world.people["pia"].id, label="load")


@dataclass
class Load:
    """What the clients were told was recorded."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(base_url: str, api_key: str, number: int, stop: threading.Event, load: Load) -> None:
    rows = [features_of(r) for r in credit_rows(50, seed=100 + number)]
    with LedgerClient(base_url, api_key, timeout=30) as client:
        sent = 0
        while not stop.is_set():
            try:
                if sent % 2 == 0:
                    answer = client.predict(MODEL, rows[sent % 50], request_id=f"c{number}-{sent}")
                    ids = [answer["prediction_id"]]
                else:
                    records = [
                        {"input": rows[(sent + i) % 50], "request_id": f"c{number}-{sent}-{i}"} for i in range(BATCH)
                    ]
                    ids = [p["prediction_id"] for p in client.predict_batch(MODEL, records)["predictions"]]
            except httpx.HTTPError:
                return  # the server is gone: what was answered before is what counts
            except Exception as exc:  # a refusal the load never expects
                with load.lock:
                    load.refused.append(f"{type(exc).__name__}: {exc}")
                return
            sent += 1
            with load.lock:
                load.acknowledged.extend(ids)


@pytest.mark.postgres
@pytest.mark.slow
def test_every_acknowledged_prediction_survives_a_sigkill(ledger_settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = _start_server(ledger_settings, log)
    try:
        api_key = _deploy(server.base_url)
        load = Load()
        stop = threading.Event()
        clients = [
            threading.Thread(target=_client, args=(server.base_url, api_key, k, stop, load)) for k in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while not load.acknowledged:  # the first request loads the model; the load is timed from its answer
            assert time.monotonic() < deadline and not load.refused, load.refused[:3] or "no prediction answered"
            time.sleep(0.05)
        time.sleep(LOAD_SECONDS)

        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()

    assert server.process.returncode == -signal.SIGKILL
    assert not load.refused, load.refused[:3]
    assert len(load.acknowledged) >= 50, f"too little load before the kill: {len(load.acknowledged)}"
    assert len(set(load.acknowledged)) == len(load.acknowledged)
    services = open_services(ledger_settings)
    try:
        missing = []
        for prediction_id in load.acknowledged:
            try:
                prediction: Prediction = services.ledger.get(prediction_id, Prediction)
            except NotFound:
                missing.append(prediction_id)
                continue
            assert prediction.model_name == MODEL
        assert not missing, f"{len(missing)} of {len(load.acknowledged)} acknowledged predictions are not in the ledger"
    finally:
        services.close()

    restarted = _start_server(ledger_settings, log)  # the ledger opens and serves again after the crash
    try:
        with LedgerClient(restarted.base_url, api_key, timeout=30) as client:
            again = client.predict(MODEL, features_of(credit_rows(1, seed=999)[0]), request_id="after-restart")
    finally:
        restarted.process.terminate()
        restarted.process.wait(timeout=60)
    assert again["model_name"] == MODEL

    verified = run_cli(ledger_settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
