"""Worker processes: a runner's runs execute in kept, warm processes, and a
worker that dies or is killed mid-run costs that run only."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.runners.contract import ExecutionRequest
from service.runners.workers import MAX_RUNS_PER_WORKER, Worker, WorkerPool

SPEC = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "features": ["a", "b"],
    "target": "y",
    "task": "classification",
}
REPO = Path(__file__).resolve().parents[3]
LEFT_BEHIND = """
import multiprocessing, sys, time
from pathlib import Path
from service.runners.contract import ExecutionRequest
from service.runners.workers import WorkerPool

folder = Path(sys.argv[1])
(folder / "data.csv").write_text("a,b,y\\n" + "".join(f"{i % 7},{i % 5},{i % 2}\\n" for i in range(40)))
(folder / "out").mkdir()
pool = WorkerPool(multiprocessing.get_context("fork"), threads=1, threadpools=None)
pool.fill(2)
spec = {"estimator": "sklearn.linear_model.LogisticRegression", "features": ["a", "b"], "target": "y",
        "task": "classification"}
worker = pool.execute(ExecutionRequest("sklearn", spec, {}, 1, "cpu", [folder / "data.csv"], None, folder / "out"))
while not worker.finished():
    time.sleep(0.01)
print("done", worker.exit_status, flush=True)
"""
SLOW_PY = "import time\ndef main(request):\n    time.sleep(60)\n    return {}\n"


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(multiprocessing.get_context("fork"), threads=1, threadpools=None)
    yield workers
    workers.close()


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    rows = [f"{i % 7 / 7:.3f},{i % 5 / 5:.3f},{int(i % 7 > 3)}" for i in range(60)]
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _request(tmp_path: Path, name: str, **overrides: object) -> ExecutionRequest:
    output = tmp_path / name
    output.mkdir()
    fields: dict[str, object] = dict(
        kind="sklearn",
        spec=SPEC,
        params={},
        seed=3,
        device="cpu",
        datasets=[_data(tmp_path)],
        code_archive=None,
        output_dir=output,
    )
    fields.update(overrides)
    return ExecutionRequest(**fields)  # type: ignore[arg-type]


def _wait(worker: Worker, timeout: float = 60) -> int | None:
    deadline = time.monotonic() + timeout
    while not worker.finished():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.02)
    return worker.exit_status


def _result(request: ExecutionRequest) -> dict[str, object]:
    return json.loads((request.output_dir / "result.json").read_text())  # type: ignore[no-any-return]


def test_consecutive_runs_go_to_the_same_warm_worker_and_give_the_same_model(tmp_path: Path, pool: WorkerPool) -> None:
    first = _request(tmp_path, "first")
    worker = pool.execute(first)
    assert _wait(worker) == 0
    pool.release(worker)
    second = _request(tmp_path, "second")
    again = pool.execute(second)
    assert again is worker and pool.started == 1
    assert _wait(again) == 0
    pool.release(again)
    assert _result(first)["ok"] and _result(second)["ok"]
    assert (first.output_dir / "model.pkl").read_bytes() == (second.output_dir / "model.pkl").read_bytes()


def test_a_failed_run_reports_its_error_and_the_worker_serves_the_next(tmp_path: Path, pool: WorkerPool) -> None:
    bad = _request(tmp_path, "bad", spec=SPEC | {"target": "missing"})
    worker = pool.execute(bad)
    assert _wait(worker) == 0
    assert "missing" in str(_result(bad)["error"])
    pool.release(worker)
    good = _request(tmp_path, "good")
    assert pool.execute(good) is worker
    assert _wait(worker) == 0 and _result(good)["ok"]


def test_a_worker_killed_mid_run_ends_that_run_only_and_is_replaced(tmp_path: Path, pool: WorkerPool) -> None:
    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("train.py", SLOW_PY)
    slow = _request(
        tmp_path, "slow", kind="python", spec={"entrypoint": "train:main"}, datasets=[], code_archive=archive
    )
    worker = pool.execute(slow)
    time.sleep(1.0)
    assert not worker.finished()
    worker.kill()
    assert worker.finished() and worker.exit_status == -9
    assert not (slow.output_dir / "result.json").exists()
    pool.release(worker)
    assert not pool.idle
    after = _request(tmp_path, "after")
    replacement = pool.execute(after)
    assert replacement is not worker and replacement.process.pid != worker.process.pid
    assert _wait(replacement) == 0 and _result(after)["ok"]


def test_an_idle_worker_that_died_is_replaced_when_a_run_comes(tmp_path: Path, pool: WorkerPool) -> None:
    pool.fill(1)
    (idle,) = pool.idle
    idle.process.kill()
    idle.process.join()
    request = _request(tmp_path, "run")
    worker = pool.execute(request)
    assert worker is not idle
    assert _wait(worker) == 0 and _result(request)["ok"]


def test_a_worker_is_replaced_after_its_quota_of_runs(tmp_path: Path, pool: WorkerPool) -> None:
    worker = pool.execute(_request(tmp_path, "one"))
    assert _wait(worker) == 0
    worker.runs = MAX_RUNS_PER_WORKER
    pool.release(worker)
    assert not pool.idle
    worker.process.join(10)
    assert not worker.process.is_alive() and worker.process.exitcode == 0


def test_a_process_exits_although_its_workers_were_never_released(tmp_path: Path) -> None:
    """Workers wait for their next run; the pool ends them at exit, or the process would never end."""
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-c", LEFT_BEHIND, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip() == "done 0"
    assert time.monotonic() - started < 60
