"""Runner processes on the Ray backend beside one ledger API (PostgreSQL), on a real Ray cluster.

Runs execute as Ray jobs that reach the ledger only with their run token; the
runners record them. Every run is executed exactly once, a runner SIGKILLed
mid-run is replaced by one that re-attaches to the still-running job, a run
cancelled through the ledger has its job ended (stopped by the runner, or ended
by itself when its run token no longer opens its inputs), a reproduction on Ray
is verified, and a cluster that goes away mid-way fails the run it lost with
the reason and leaves new runs requested until it is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.ray_cluster import RayCluster, remove_cluster, start_cluster
from support.runner_http import RunnerPrincipal, start_runner
from support.runner_world import (
    code_archive,
    dataset,
    python_pipeline,
    request,
    sklearn_pipeline,
    torch_pipeline,
    wait_finished,
)

from domain.environment import environment_digest
from domain.run import Run
from service.bootstrap import Services
from service.ops.projector import publish_checkpoint_if_due
from service.ops.verify import verify_ledger
from service.runners.ray_backend import RayBackend
from service.runners.work import WorkOrder

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUNS = 20
SLOW = """
import pathlib, time

def main(request):
    time.sleep({seconds})
    pathlib.Path(request["output_dir"], "model.txt").write_text("slept")
    return {{"slept": {seconds}}}
"""


def _ray_runner(
    api: tuple[str, RunnerPrincipal],
    cluster: RayCluster,
    tmp_path: Path,
    index: int,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int = 2,
) -> subprocess.Popen[bytes]:
    """``mlledger runner --backend ray`` with the cluster's token in its environment."""
    url, principal = api
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    return start_runner(
        url,
        principal,
        tmp_path / f"runner-{index}.pem",
        tmp_path / f"runner-{index}.log",
        "--backend",
        "ray",
        "--ray-address",
        cluster.address.removeprefix("http://"),
        "--concurrency",
        str(concurrency),
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _events(services: Services, run_id: str, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in services.ledger.events.get(run_id) if isinstance(e, kind)]


def _error(services: Services, run_id: str) -> str | None:
    """The error the run finished with."""
    finished = _events(services, run_id, Run.Finished)
    return finished[-1].error if finished else None


def _wait_status(services: Services, run_id: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while services.ledger.get(run_id, Run).status != status:
        assert time.monotonic() < deadline, f"run {run_id} is {services.ledger.get(run_id, Run).status}"
        time.sleep(0.1)


def _job_status(cluster: RayCluster, run_id: str) -> str | None:
    """The status of the run's Ray job, None while the cluster has none."""
    backend = RayBackend(cluster.address, ledger_url="http://127.0.0.1:9", token=cluster.token)
    execution = backend.reattach(_order_of(run_id), "cpu")
    if execution is None:
        return None
    execution.finished()
    return execution.status


def _slow_run(services: Services, seconds: int) -> str:
    """A requested run of a ``python`` pipeline that sleeps ``seconds``."""
    data = dataset(services)
    code = code_archive(services, SLOW.format(seconds=seconds))
    return request(services, python_pipeline(services, "slow", "train:main", 300), data, code_version_id=code)


def _wait_job_running(services: Services, cluster: RayCluster, run_id: str, timeout: float = 120) -> None:
    """Wait until a runner claimed the run and its Ray job runs."""
    _wait_status(services, run_id, "running")
    deadline = time.monotonic() + timeout
    while _job_status(cluster, run_id) != "RUNNING":
        assert time.monotonic() < deadline, f"the Ray job of run {run_id} never started"
        time.sleep(0.2)


def _order_of(run_id: str) -> WorkOrder:
    return WorkOrder(run_id, "sklearn", {}, "", {}, 0, "cpu", [], "")


def _verify(services: Services) -> None:
    services.runner.catch_up()
    publish_checkpoint_if_due(services, force=True)
    report = verify_ledger(services.settings, [], workers=2)
    assert report.ok, [f.describe() for f in report.findings]


def test_two_ray_runners_execute_twenty_runs_each_exactly_once(
    pg_services: Services,
    api: tuple[str, RunnerPrincipal],
    ray_cluster: RayCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = dataset(pg_services)
    pipeline = sklearn_pipeline(pg_services)
    run_ids = [request(pg_services, pipeline, data, seed=i) for i in range(RUNS)]
    runners = [_ray_runner(api, ray_cluster, tmp_path, index, monkeypatch) for index in range(2)]
    try:
        runs = wait_finished(pg_services, run_ids, timeout=480)
    finally:
        _stop(runners)

    assert [run.status for run in runs] == ["succeeded"] * RUNS, [_error(pg_services, i) for i in run_ids]
    claims = {run_id: _events(pg_services, run_id, Run.Claimed) for run_id in run_ids}
    assert all(len(found) == 1 for found in claims.values())
    assert len({found[0].runner_id for found in claims.values()}) == 2, "the work was shared"
    for run in runs:
        assert run.environment.get("backend") == "ray"
        (resources,) = _events(pg_services, str(run.id), Run.ResourcesRecorded)
        assert resources.resources["backend"] == "ray" and resources.resources["cpu_seconds"] > 0
        assert _job_status(ray_cluster, str(run.id)) == "SUCCEEDED"  # one Ray job per run, named by it
    _verify(pg_services)


def test_a_sigkilled_ray_runner_is_replaced_by_one_that_reattaches_to_the_running_job(
    pg_services: Services,
    api: tuple[str, RunnerPrincipal],
    ray_cluster: RayCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = _slow_run(pg_services, seconds=20)
    doomed = _ray_runner(api, ray_cluster, tmp_path, 0, monkeypatch, concurrency=1)
    survivors: list[subprocess.Popen[bytes]] = []
    try:
        _wait_job_running(pg_services, ray_cluster, run_id)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
        assert _job_status(ray_cluster, run_id) == "RUNNING", "the job outlives its runner"
        survivors = [_ray_runner(api, ray_cluster, tmp_path, 1, monkeypatch, concurrency=1)]
        (run,) = wait_finished(pg_services, [run_id], timeout=180)
    finally:
        _stop([doomed, *survivors])

    assert run.status == "succeeded", _error(pg_services, run_id)
    (claimed,) = _events(pg_services, run_id, Run.Claimed)
    (reattached,) = _events(pg_services, run_id, Run.Reattached)
    assert reattached.runner_id != claimed.runner_id
    assert _events(pg_services, run_id, Run.Abandoned) == []
    (attested,) = _events(pg_services, run_id, Run.ExecutionAttested)
    assert attested.statement["runner_id"] == reattached.runner_id
    assert _job_status(ray_cluster, run_id) == "SUCCEEDED"
    _verify(pg_services)


def test_a_sklearn_run_and_a_torch_run_on_ray_are_reproduced_and_verified(
    pg_services: Services,
    api: tuple[str, RunnerPrincipal],
    ray_cluster: RayCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = dataset(pg_services)
    run_ids = [
        request(pg_services, sklearn_pipeline(pg_services), data),
        request(pg_services, torch_pipeline(pg_services), data, params={"epochs": 3}),
    ]
    runner = _ray_runner(api, ray_cluster, tmp_path, 0, monkeypatch)
    try:
        originals = wait_finished(pg_services, run_ids, timeout=300)
        assert [run.status for run in originals] == ["succeeded"] * 2, [_error(pg_services, r) for r in run_ids]
        reproductions = [pg_services.ledger.request_again(r, "bob", reproduce=True).id for r in run_ids]
        again = wait_finished(pg_services, reproductions, timeout=300)
        deadline = time.monotonic() + 30
        while not all(pg_services.ledger.get(r, Run).verdicts for r in run_ids):
            assert time.monotonic() < deadline, "no verdict on an original run"
            time.sleep(0.1)
    finally:
        _stop([runner])

    assert [run.status for run in again] == ["succeeded"] * 2, [_error(pg_services, r) for r in reproductions]
    for run_id, reproduction in zip(run_ids, reproductions, strict=True):
        assert pg_services.ledger.get(run_id, Run).verdicts == {reproduction: "verified"}
        verified = _events(pg_services, run_id, Run.ReproductionVerified)
        assert [event.reproduction_run_id for event in verified] == [reproduction]
    assert all(run.environment.get("backend") == "ray" for run in again)
    nodes = [_events(pg_services, r, Run.ExecutionAttested)[0].node_environment for r in [*run_ids, *reproductions]]
    sklearn_node, torch_node, sklearn_again, torch_again = nodes
    if sklearn_node["torch"] is not None:  # described, never imported, by a scikit-learn run's job
        assert sklearn_node["torch"]["imported"] is False
        assert "num_threads" in torch_node["torch"]
    # one node, the same kind and seed: the reproduction's job captured what the original's did
    assert environment_digest(sklearn_again) == environment_digest(sklearn_node)
    assert environment_digest(torch_again) == environment_digest(torch_node)
    _verify(pg_services)


def test_cancelling_a_run_through_the_ledger_ends_its_ray_job(
    pg_services: Services,
    api: tuple[str, RunnerPrincipal],
    ray_cluster: RayCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = _slow_run(pg_services, seconds=240)
    runner = _ray_runner(api, ray_cluster, tmp_path, 0, monkeypatch, concurrency=1)
    try:
        _wait_job_running(pg_services, ray_cluster, run_id)
        pg_services.ledger.finish_run(run_id, "cancelled", "cancelled by alice", actor="alice")
        deadline = time.monotonic() + 180
        # STOPPED: the runner had Ray stop it. A job cancelled before it fetched its inputs finds its
        # token refused and ends by itself, printing a failed outcome (exit 0, so Ray says SUCCEEDED).
        while (status := _job_status(ray_cluster, run_id)) not in ("STOPPED", "FAILED", "SUCCEEDED"):
            log = (tmp_path / "runner-0.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"the Ray job is {status} after its run was cancelled; runner: {log}"
            time.sleep(0.5)
        backend = RayBackend(ray_cluster.address, ledger_url="http://127.0.0.1:9", token=ray_cluster.token)
        info = backend.client().get_job_info(run_id)
        execution = backend.reattach(_order_of(run_id), "cpu")
        assert execution is not None
        outcome = execution.outcome()
    finally:
        _stop([runner])

    assert info.end_time is not None and info.start_time is not None
    assert (info.end_time - info.start_time) / 1000 < 200, "the job ran its 240 s pipeline after the cancel"
    assert not outcome.ok
    assert status == "STOPPED" or "the run is cancelled" in str(outcome.error), (status, outcome.error)
    assert pg_services.ledger.get(run_id, Run).status == "cancelled"
    assert _events(pg_services, run_id, Run.ExecutionAttested) == []
    _verify(pg_services)


def test_a_cluster_stopped_mid_way_fails_the_run_it_lost_and_new_runs_wait_for_it(
    pg_services: Services,
    api: tuple[str, RunnerPrincipal],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = start_cluster(num_cpus=2)
    runner: subprocess.Popen[bytes] | None = None
    try:
        lost = _slow_run(pg_services, seconds=60)
        runner = _ray_runner(api, cluster, tmp_path, 0, monkeypatch)
        _wait_job_running(pg_services, cluster, lost)

        cluster.stop(hard=True)
        time.sleep(2)  # the runner looks at the cluster before each claim (and trusts an answer for 1 s)
        waiting = request(pg_services, sklearn_pipeline(pg_services), dataset(pg_services))
        time.sleep(6)
        assert pg_services.ledger.get(waiting, Run).status == "requested", "a run was claimed with no cluster"
        assert runner.poll() is None, "the runner keeps serving"
        cluster.start()

        lost_run, done = wait_finished(pg_services, [lost, waiting], timeout=240)
    finally:
        if runner is not None:
            _stop([runner])
        remove_cluster(cluster)

    assert lost_run.status == "failed"
    assert "no longer has job" in str(_error(pg_services, lost)), _error(pg_services, lost)
    assert done.status == "succeeded", _error(pg_services, waiting)
    log = (tmp_path / "runner-0.log").read_text(errors="replace")
    assert "cannot be reached" in log
    _verify(pg_services)
