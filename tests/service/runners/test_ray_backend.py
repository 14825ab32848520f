"""The Ray backend against a real single-node Ray cluster (token authentication on).

Jobs are submitted through the Jobs API exactly as a runner submits them and run
``python -m service.runners.ray_job`` on the cluster. The job side talks to a
small stand-in for the run-scoped part of the ledger's runner API (inputs by
digest, outputs, progress, all with the run token), served in this process;
it splits an ``outputs:batch`` body with the server's own parser (the blob
store's ``put_async_parts``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import anyio
import pytest
from support.ray_cluster import RayCluster, free_ports
from support.runner_world import FEATURES, small_csv

from domain.errors import InvalidPayload
from service.runners.gateway import LedgerUnavailable
from service.runners.ray_backend import (
    OUTCOME_MARK,
    STOP_TRIES,
    ClusterUnavailable,
    RayBackend,
    RayExecution,
    RayJobExists,
    job_resources,
    parse_outcome,
)
from service.runners.ray_job import PHASES_MARK, JobSettings, Phases, process_started
from service.runners.transfer import Backoff
from service.runners.work import Input, Outcome, WorkOrder
from service.store.blobs import BlobStore


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StandInLedger:
    """The run-scoped endpoints of the runner API for one run, checking the run token on every request."""

    def __init__(self, run_id: str, token: str, blobs: dict[str, bytes]) -> None:
        self.run_id = run_id
        self.token = token
        self.blobs = blobs
        self.served: dict[str, bytes] = {}  # digest -> other bytes to serve (a tampered store)
        self.outputs: dict[str, bytes] = {}
        self.puts: list[str] = []  # the upload endpoint of each PUT, in order
        self.store = BlobStore(Path(tempfile.mkdtemp(prefix="stand-in-ledger-")))
        self.points: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.gate = threading.Event()  # downloads wait for it
        self.gate.set()
        self.downloading = threading.Event()
        ledger = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _allowed(self) -> str | None:
                path = urlparse(self.path).path
                prefix = f"/v1/runner/runs/{ledger.run_id}/"
                if self.headers.get("X-Run-Token") != ledger.token or not path.startswith(prefix):
                    ledger.refused.append(f"{self.command} {path}")
                    self._answer(403, {"title": "Forbidden", "detail": "not this run's token"})
                    return None
                return path.removeprefix(prefix)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_GET(self) -> None:
                rest = self._allowed()
                if rest is None:
                    return
                digest = rest.removeprefix("inputs/")
                if digest not in ledger.blobs:
                    self._answer(404, {"detail": f"no input {digest}"})
                    return
                ledger.downloading.set()
                ledger.gate.wait(120)
                data = ledger.served.get(digest, ledger.blobs[digest])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                rest = self._allowed()
                if rest is None:
                    return
                query = parse_qs(urlparse(self.path).query)
                data = self._body()
                ledger.puts.append(rest)
                if rest == "outputs":
                    ledger.outputs[query["name"][0]] = data
                    self._answer(201, {"digest": _digest(data), "size": len(data)})
                elif rest == "outputs:batch":
                    try:
                        stored = ledger.store_parts(data, query["name"], [int(size) for size in query["size"]])
                    except InvalidPayload as exc:
                        self._answer(422, {"title": exc.title, "detail": exc.detail})
                        return
                    self._answer(201, {"outputs": stored})
                else:
                    self._answer(404, {"detail": f"no endpoint PUT {rest}"})

            def do_POST(self) -> None:
                rest = self._allowed()
                if rest is None:
                    return
                ledger.points.extend(json.loads(self._body())["points"])
                self._answer(200, {"ok": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def store_parts(self, body: bytes, names: list[str], sizes: list[int]) -> list[dict[str, Any]]:
        """Split an ``outputs:batch`` body into its files as the server does; keep each under its name."""

        async def stream() -> AsyncIterator[bytes]:
            yield body

        async def put() -> list[dict[str, Any]]:
            stored = await self.store.put_async_parts(stream(), sizes)
            for name, blob in zip(names, stored, strict=True):
                self.outputs[name] = blob.path.read_bytes()
            return [{"digest": blob.digest, "size": blob.size} for blob in stored]

        return anyio.run(put)

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.store.root, ignore_errors=True)


def _archive(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", source)
    return buffer.getvalue()


SLEEPER = """
import time

def main(request):
    time.sleep(120)
    return {"slept": 1.0}
"""

SNOOPER = """
import os, pathlib

def main(request):
    seen = "\\n".join(f"{k}={v}" for k, v in os.environ.items())
    pathlib.Path(request["output_dir"], "model.txt").write_text("m")
    return {"secrets_seen": float(any(s in seen for s in request["params"]["secrets"]))}
"""


def _order(kind: str, spec: dict[str, Any], blobs: dict[str, tuple[str, bytes]], **fields: Any) -> WorkOrder:
    inputs = [Input(role, name, _digest(data), len(data)) for name, (role, data) in blobs.items()]
    return WorkOrder(
        run_id=f"run-{uuid.uuid4().hex[:12]}",
        kind=kind,
        spec=spec,
        spec_digest=_digest(json.dumps(spec).encode()),
        params=fields.pop("params", {}),
        seed=7,
        device="cpu",
        inputs=inputs,
        run_token=uuid.uuid4().hex + uuid.uuid4().hex,
        **fields,
    )


@contextlib.contextmanager
def _served(order: WorkOrder, blobs: dict[str, tuple[str, bytes]]) -> Iterator[StandInLedger]:
    ledger = StandInLedger(order.run_id, order.run_token, {_digest(data): data for _, data in blobs.values()})
    try:
        yield ledger
    finally:
        ledger.close()


def _backend(cluster: RayCluster, ledger: StandInLedger, **options: Any) -> RayBackend:
    return RayBackend(cluster.address, ledger_url=ledger.url, token=cluster.token, **options)


def _wait(execution: RayExecution, timeout: float = 180) -> Outcome:
    deadline = time.monotonic() + timeout
    while not execution.finished():
        assert time.monotonic() < deadline, f"job {execution.submission_id} still {execution.status}"
        time.sleep(0.3)
    return execution.outcome()


def _wait_status(execution: RayExecution, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while execution.finished() is False and execution.status != wanted:
        assert time.monotonic() < deadline, f"job {execution.submission_id} still {execution.status}"
        time.sleep(0.2)
    assert execution.status == wanted


SKLEARN_SPEC = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "features": FEATURES,
    "target": "label",
    "task": "classification",
    "resources": {"cpus": 1, "memory_mb": 512},
}


# -- without a cluster ----------------------------------------------------------------------


def test_job_resources_follow_the_spec_with_one_cpu_by_default() -> None:
    plain = _order("sklearn", {"features": FEATURES}, {})
    assert job_resources(plain, "cpu") == {"entrypoint_num_cpus": 1.0, "entrypoint_num_gpus": 0.0}
    assert job_resources(plain, "cuda")["entrypoint_num_gpus"] == 1.0
    asked = _order("torch", {"resources": {"cpus": 2, "gpus": 0.5, "memory_mb": 300}}, {})
    assert job_resources(asked, "cuda") == {
        "entrypoint_num_cpus": 2.0,
        "entrypoint_num_gpus": 0.5,
        "entrypoint_memory": 300 * 1024 * 1024,
    }


def test_the_job_knows_when_its_process_started_and_times_its_steps_from_then() -> None:
    started = process_started()
    assert time.time() - 24 * 3600 < started <= time.time()  # this test process started today

    phases = Phases(time.time() - 1.0)
    phases.mark("start")
    phases.mark("download")
    report = phases.report()

    assert report["start"] >= 1.0 and 0 <= report["download"] < 1.0
    assert report["total"] >= report["start"] + report["download"]
    assert report["started_at"] == round(phases.started, 3)


def test_the_outcome_is_the_last_marked_line_of_the_log() -> None:
    first, last = Outcome(ok=False, error="first"), Outcome(ok=True, metrics=[{"key": "a", "value": 1.0, "step": 0}])
    text = f"noise\n{OUTCOME_MARK}{json.dumps(first.to_json())}\nmore\n{OUTCOME_MARK}{json.dumps(last.to_json())}\n"
    assert parse_outcome(text) == last
    assert parse_outcome("no outcome here\n") is None
    assert parse_outcome(f"{OUTCOME_MARK}{{not json\n") is None


def test_backoff_doubles_up_to_its_longest_wait_and_resets() -> None:
    backoff = Backoff(first=1, longest=5)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next() == 1


class _StopClient:
    """A Jobs API client whose first stops find no supervisor to tell while the job still runs."""

    def __init__(self, refusals: int, status: str) -> None:
        self.refusals, self.status, self.stops = refusals, status, 0

    def stop_job(self, _submission_id: str) -> bool:
        self.stops += 1
        return self.stops > self.refusals

    def get_job_status(self, _submission_id: str) -> str:
        return self.status


def _stopping(client: _StopClient, monkeypatch: pytest.MonkeyPatch) -> RayExecution:
    monkeypatch.setattr("service.runners.ray_backend.time.sleep", lambda _seconds: None)
    backend = RayBackend("127.0.0.1:1", ledger_url="http://127.0.0.1:1", token="t")
    monkeypatch.setattr(backend, "client", lambda: client)
    return RayExecution(backend, _order("sklearn", SKLEARN_SPEC, {}), "cpu")


def test_a_stop_the_cluster_did_not_take_is_asked_again_while_the_job_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    running = _StopClient(refusals=1, status="RUNNING")
    _stopping(running, monkeypatch).cancel()
    assert running.stops == 2

    ended = _StopClient(refusals=5, status="SUCCEEDED")  # no supervisor because the job already ended
    _stopping(ended, monkeypatch).cancel()
    assert ended.stops == 1


def test_a_stop_refused_more_than_its_tries_goes_on_being_asked_until_the_job_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stubborn = _StopClient(refusals=STOP_TRIES + 2, status="RUNNING")
    execution = _stopping(stubborn, monkeypatch)
    execution.cancel()  # returns after its own tries: the runner's loop is not held up
    assert execution.stopper is not None
    execution.stopper.join(10)
    assert not execution.stopper.is_alive()
    assert stubborn.stops == STOP_TRIES + 3  # asked until the cluster took the stop, then no more


def test_the_job_takes_its_secrets_and_every_ray_variable_out_of_its_environment() -> None:
    order = _order("sklearn", SKLEARN_SPEC, {})
    backend = RayBackend("http://127.0.0.1:1", ledger_url="http://ledger.test/", token="cluster-token")
    env = {"PATH": "/bin", "RAY_AUTH_TOKEN": "cluster-token", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{...}"}
    env |= backend.job_environment(order, "cpu")
    assert order.run_token not in env["MLLEDGER_WORK_ORDER"]

    settings = JobSettings.take(env)

    assert settings.order == order
    assert settings.ledger_url == "http://ledger.test"
    assert settings.device == "cpu"
    assert env == {"PATH": "/bin"}


def test_an_unreachable_cluster_raises_cluster_unavailable_quickly() -> None:
    [port] = free_ports(1)
    backend = RayBackend(f"127.0.0.1:{port}", ledger_url="http://127.0.0.1:9", token="t", timeout=2)
    order = _order("sklearn", SKLEARN_SPEC, {})
    started = time.monotonic()

    assert backend.ready() is False
    with pytest.raises(ClusterUnavailable, match=f"127.0.0.1:{port} cannot be reached"):
        backend.start(order, "cpu")
    with pytest.raises(ClusterUnavailable):
        backend.reattach(order, "cpu")
    assert issubclass(ClusterUnavailable, LedgerUnavailable), "the runner backs off and retries"

    assert time.monotonic() - started < 10


# -- on the session's cluster ---------------------------------------------------------------


@pytest.mark.slow
def test_a_cluster_refuses_a_wrong_token_clearly(ray_cluster: RayCluster) -> None:
    backend = RayBackend(ray_cluster.address, ledger_url="http://127.0.0.1:9", token="not-the-token")

    assert backend.ready() is False
    with pytest.raises(ClusterUnavailable, match="refused the runner's token"):
        backend.start(_order("sklearn", SKLEARN_SPEC, {}), "cpu")


@pytest.mark.slow
def test_a_run_executes_as_a_ray_job_and_uploads_its_outputs(ray_cluster: RayCluster) -> None:
    data = small_csv()
    blobs = {"small": ("dataset", data)}
    order = _order("sklearn", SKLEARN_SPEC, blobs)
    with _served(order, blobs) as ledger:
        backend = _backend(ray_cluster, ledger)
        assert backend.ready()

        outcome = _wait(backend.start(order, "cpu"))

        assert outcome.ok, outcome.error
        assert sorted(o.name for o in outcome.outputs) == ["execution.json", "model.pkl", "predictions.json"]
        for output in outcome.outputs:
            assert output.digest == _digest(ledger.outputs[output.name])
            assert output.size == len(ledger.outputs[output.name])
        details = json.loads(ledger.outputs["execution.json"])
        assert details["kind"] == "sklearn" and details["seed"] == 7
        metrics = {p["key"] for p in [*ledger.points, *outcome.metrics]}
        assert "accuracy" in metrics or any("acc" in key for key in metrics), metrics
        assert outcome.environment is not None
        assert outcome.environment["backend"] == "ray" and outcome.environment["device"] == "cpu"
        assert outcome.resources["backend"] == "ray"
        assert outcome.resources["wall_seconds"] > 0 and outcome.resources["cpu_seconds"] > 0
        assert ledger.refused == []
        assert ledger.puts == ["outputs:batch"], "the three outputs go up in one request"
        info = backend.client().get_job_info(order.run_id)
        assert info.entrypoint == f"{backend.python} -m service.runners.ray_job"
        assert info.submission_id == order.run_id
        if outcome.environment["torch"] is not None:  # a scikit-learn run's job never imports torch
            assert outcome.environment["torch"]["imported"] is False
        log_text = backend.client().get_job_logs(order.run_id)
        line = next(x for x in log_text.splitlines() if x.startswith(PHASES_MARK))
        phases = json.loads(line[len(PHASES_MARK) :])
        assert {"start", "download", "capture", "child", "upload", "total", "started_at"} <= set(phases)
        steps = sum(phases[k] for k in ("start", "download", "capture", "child", "upload"))
        assert 0 < steps <= phases["total"] + 0.01
        # the execution child finished its imports after the job started and before the run's end
        assert 0 < phases["ready"] < phases["start"] + phases["download"] + phases["capture"] + phases["child"]


@pytest.mark.slow
def test_a_job_gets_the_resources_its_spec_asks_for(ray_cluster: RayCluster) -> None:
    blobs = {"small": ("dataset", small_csv())}
    order = _order("sklearn", {**SKLEARN_SPEC, "resources": {"cpus": ray_cluster.num_cpus + 1}}, blobs)
    with _served(order, blobs) as ledger:
        execution = _backend(ray_cluster, ledger).start(order, "cpu")

        time.sleep(5)  # more CPUs than the cluster has: Ray does not start it

        assert execution.finished() is False and execution.status == "PENDING"
        assert not ledger.downloading.is_set()
        execution.cancel()
        outcome = _wait(execution, timeout=60)
        assert outcome.error == "cancelled"


@pytest.mark.slow
def test_a_second_submission_of_the_same_run_is_refused_by_ray(ray_cluster: RayCluster) -> None:
    blobs = {"small": ("dataset", small_csv())}
    order = _order("sklearn", SKLEARN_SPEC, blobs)
    with _served(order, blobs) as ledger:
        ledger.gate.clear()  # the job waits in its first download
        backend = _backend(ray_cluster, ledger)
        execution = backend.start(order, "cpu")
        try:
            with pytest.raises(RayJobExists, match=order.run_id):
                backend.start(order, "cpu")
            with pytest.raises(RayJobExists):
                _backend(ray_cluster, ledger).start(order, "cpu")  # another runner
        finally:
            ledger.gate.set()
        assert _wait(execution).ok


@pytest.mark.slow
def test_reattach_finds_a_running_job_and_nothing_for_a_run_without_one(ray_cluster: RayCluster) -> None:
    blobs = {"small": ("dataset", small_csv())}
    order = _order("sklearn", SKLEARN_SPEC, blobs)
    with _served(order, blobs) as ledger:
        ledger.gate.clear()
        _backend(ray_cluster, ledger).start(order, "cpu")
        assert ledger.downloading.wait(120), "the job never asked for its input"

        taken_over = _backend(ray_cluster, ledger).reattach(order, "cpu")  # a runner that took over the run

        assert taken_over is not None
        assert taken_over.finished() is False and taken_over.status == "RUNNING"
        assert _backend(ray_cluster, ledger).reattach(_order("sklearn", SKLEARN_SPEC, blobs), "cpu") is None
        ledger.gate.set()
        outcome = _wait(taken_over)
        assert outcome.ok, outcome.error
        assert {o.name for o in outcome.outputs} == set(ledger.outputs)


@pytest.mark.slow
def test_cancel_stops_a_running_job_and_its_execution(ray_cluster: RayCluster) -> None:
    blobs = {"code": ("code", _archive(SLEEPER))}
    spec = {"entrypoint": "train:main", "time_limit_seconds": 300}
    order = _order("python", spec, blobs)
    with _served(order, blobs) as ledger:
        backend = _backend(ray_cluster, ledger)
        execution = backend.start(order, "cpu")
        deadline = time.monotonic() + 120
        while not _processes_of(order.run_id):  # the execution child has started
            assert time.monotonic() < deadline, "the execution never started"
            assert not execution.finished(), execution.outcome()
            time.sleep(0.3)

        execution.cancel()

        outcome = _wait(execution, timeout=60)
        assert execution.status == "STOPPED"
        assert not outcome.ok and outcome.error == "cancelled"
        deadline = time.monotonic() + 15
        while _processes_of(order.run_id):
            assert time.monotonic() < deadline, f"left running: {_processes_of(order.run_id)}"
            time.sleep(0.3)
        assert ledger.outputs == {}


def _processes_of(run_id: str) -> list[int]:
    """Processes executing ``run_id`` (their command line names its private folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if f"mlledger-ray-{run_id}" in cmdline or f"mlledger-ray-{run_id}" in os.readlink(entry / "cwd"):
                    found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_an_input_whose_digest_differs_is_refused(ray_cluster: RayCluster) -> None:
    blobs = {"small": ("dataset", small_csv())}
    order = _order("sklearn", SKLEARN_SPEC, blobs)
    with _served(order, blobs) as ledger:
        ledger.served[order.inputs[0].digest] = small_csv(seed=99)

        outcome = _wait(_backend(ray_cluster, ledger).start(order, "cpu"))

        assert not outcome.ok
        assert f"arrived with digest {_digest(small_csv(seed=99))}, not {order.inputs[0].digest}" in str(outcome.error)
        assert ledger.outputs == {}


@pytest.mark.slow
def test_the_executed_code_sees_neither_the_run_token_nor_the_cluster_token(ray_cluster: RayCluster) -> None:
    blobs = {"code": ("code", _archive(SNOOPER))}
    spec = {"entrypoint": "train:main", "time_limit_seconds": 60}
    order = _order("python", spec, blobs, params={"secrets": []})
    order = WorkOrder.from_json(order.to_json() | {"params": {"secrets": [order.run_token, ray_cluster.token]}})
    with _served(order, blobs) as ledger:
        outcome = _wait(_backend(ray_cluster, ledger).start(order, "cpu"))

        assert outcome.ok, outcome.error
        seen = [p for p in [*ledger.points, *outcome.metrics] if p["key"] == "secrets_seen"]
        assert [p["value"] for p in seen] == [0.0]


@pytest.mark.slow
def test_a_cluster_that_goes_away_loses_its_jobs_and_takes_missed_submissions_when_back(
    ray_cluster: RayCluster,
) -> None:
    blobs = {"small": ("dataset", small_csv())}
    running, missed, given_up = (_order("sklearn", SKLEARN_SPEC, blobs) for _ in range(3))
    with _served(running, blobs) as first, _served(missed, blobs) as second:
        first.gate.clear()
        execution = _backend(ray_cluster, first).start(running, "cpu")
        assert first.downloading.wait(120), "the job never asked for its input"
        backend, impatient = _backend(ray_cluster, second), _backend(ray_cluster, second, lost_after=1)
        assert backend.ready() and impatient.ready()

        ray_cluster.stop(hard=True)
        try:
            waiting = backend.start(missed, "cpu")  # the cluster went away after the runner looked
            abandoned = impatient.start(given_up, "cpu")
            assert not waiting.submitted and not waiting.finished()
            assert not execution.finished(), "a cluster that does not answer is waited for"
            time.sleep(1.5)
            assert abandoned.finished()
        finally:
            ray_cluster.start()

        lost = _wait(execution)
        assert not lost.ok and "no longer has job" in str(lost.error)
        outcome = _wait(waiting)
        assert outcome.ok, outcome.error
        assert {o.name for o in outcome.outputs} == set(second.outputs)
        gone = abandoned.outcome()
        assert not gone.ok and "could not be reached for 1 s (the run's job was never submitted)" in str(gone.error)
