"""Measuring one execution: CPU time of the process tree, peak memory of this run
(in a worker process reused run after run), wall time, host and backend, and
result.json carrying them. Real processes, real CPU burnt, real memory touched."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from service.runners.child import run_request
from service.runners.contract import ExecutionRequest
from service.runners.usage import children, measured

MB = 10**6
REPO = Path(__file__).resolve().parents[3]
BURN_SECONDS = 1.5
BURN = f"""
import time
while time.process_time() < {BURN_SECONDS}:
    pass
"""
ENTRYPOINT = f"""
import os
import time

def _model(request):
    with open(os.path.join(request["output_dir"], "model.json"), "w") as handle:
        handle.write("{{}}")

def burn(request):
    while time.process_time() < {BURN_SECONDS}:
        pass
    _model(request)
    return {{"process_cpu_seconds": time.process_time()}}

def allocate(request):
    block = bytearray(200 * 10**6)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    _model(request)
    return {{"allocated": len(block)}}
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and fork are Linux's")


def _python_request(tmp_path: Path, entrypoint: str, name: str) -> ExecutionRequest:
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("job.py", ENTRYPOINT)
    output = tmp_path / name
    output.mkdir()
    return ExecutionRequest("python", {"entrypoint": entrypoint}, {}, 0, "cpu", [], archive, output)


def _in_one_worker(jobs: list[Callable[[], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run ``jobs`` one after another in one forked process, as a runner's worker serves runs."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()

    def serve(connection: Connection) -> None:
        connection.send([job() for job in jobs])

    process = context.Process(target=serve, args=(theirs,))
    process.start()
    try:
        assert ours.poll(120), "the worker did not answer"
        answers: list[dict[str, Any]] = ours.recv()
    finally:
        process.join(30)
    return answers


def test_cpu_burnt_by_a_waited_for_child_is_counted() -> None:
    with measured("cpu") as usage:
        subprocess.run([sys.executable, "-c", BURN], check=True)

    assert BURN_SECONDS * 0.8 <= usage.resources["cpu_seconds"] <= BURN_SECONDS * 1.2
    assert usage.resources["wall_seconds"] >= usage.resources["cpu_seconds"] * 0.5


def _bwrap(command: list[str]) -> list[str]:
    """``command`` in a bubblewrap sandbox with its own user and pid namespaces, as the python kind runs code."""
    system = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"]
    system += ["--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev"]
    return ["bwrap", "--unshare-user", "--unshare-pid", "--die-with-parent", "--new-session", *system, *command]


def _bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    return subprocess.run(_bwrap(["/usr/bin/true"]), capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _bwrap_works(), reason="needs a working bubblewrap (bwrap)")
def test_cpu_burnt_inside_a_pid_namespace_sandbox_is_counted() -> None:
    # bwrap reports the exit status before its namespace's init is reaped: the measurement adopts and waits for it.
    before = children()
    with measured("cpu") as usage:
        subprocess.run(_bwrap(["/usr/bin/python3", "-c", BURN]), check=True, start_new_session=True)

    assert BURN_SECONDS * 0.8 <= usage.resources["cpu_seconds"] <= BURN_SECONDS * 1.2
    assert children() == before  # nothing adopted is left behind as a zombie


def test_cpu_burnt_in_this_process_is_counted() -> None:
    with measured("cpu") as usage:
        start = __import__("time").process_time()
        while __import__("time").process_time() - start < 0.5:
            pass

    assert 0.5 <= usage.resources["cpu_seconds"] <= 0.5 * 1.2


def test_the_measurement_names_the_host_and_backend_and_no_gpu_on_cpu() -> None:
    with measured("cpu", backend="ray") as usage:
        pass

    assert usage.resources["host"] == socket.gethostname()
    assert usage.resources["backend"] == "ray"
    assert "gpu_seconds" not in usage.resources
    assert "peak_gpu_memory_bytes" not in usage.resources


def test_a_block_that_raises_is_still_measured() -> None:
    with pytest.raises(RuntimeError), measured("cpu") as usage:
        raise RuntimeError("the run failed")

    assert usage.resources["wall_seconds"] >= 0
    assert usage.resources["peak_rss_bytes"] > 0


def _allocate() -> dict[str, Any]:
    with measured("cpu") as usage:
        block = bytearray(200 * MB)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        del block
    return usage.resources


def _idle() -> dict[str, Any]:
    with measured("cpu") as usage:
        pass
    return usage.resources


def test_a_reused_worker_reports_each_runs_own_peak_memory() -> None:
    big, small = _in_one_worker([_allocate, _idle])

    assert big["peak_rss_bytes"] >= 200 * MB
    # The second run did not allocate: the first run's high-water mark was reset before it.
    assert small["peak_rss_bytes"] < big["peak_rss_bytes"] - 150 * MB
    assert small["cpu_seconds"] < 0.2


def test_result_json_of_a_run_carries_the_cpu_its_entrypoint_burnt(tmp_path: Path) -> None:
    request = _python_request(tmp_path, "job:burn", "burn")

    (status,) = _in_one_worker([lambda: {"status": run_request(request)}])

    result = json.loads((request.output_dir / "result.json").read_text())
    assert status == {"status": 0}
    assert result["ok"] is True
    burnt = next(m["value"] for m in result["metrics"] if m["key"] == "process_cpu_seconds")
    assert burnt >= BURN_SECONDS
    assert burnt * 0.8 <= result["resources"]["cpu_seconds"] <= burnt * 1.2
    assert set(result["resources"]) == {"cpu_seconds", "peak_rss_bytes", "wall_seconds", "host", "backend"}
    assert result["resources"]["backend"] == "local"


def test_result_json_of_a_run_that_allocates_200_mb_reports_at_least_that(tmp_path: Path) -> None:
    request = _python_request(tmp_path, "job:allocate", "allocate")

    _in_one_worker([lambda: {"status": run_request(request, backend="local")}])

    result = json.loads((request.output_dir / "result.json").read_text())
    assert result["ok"] is True
    assert result["resources"]["peak_rss_bytes"] >= 200 * MB


def test_a_failed_run_still_reports_what_it_used(tmp_path: Path) -> None:
    request = _python_request(tmp_path, "job:missing", "missing")

    run_request(request)

    result = json.loads((request.output_dir / "result.json").read_text())
    assert result["ok"] is False
    assert result["resources"]["wall_seconds"] > 0


def test_a_cuda_run_holds_the_gpu_for_its_wall_time() -> None:
    with measured("cuda") as usage:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    assert usage.resources["gpu_seconds"] == usage.resources["wall_seconds"] > 0


def test_a_cuda_run_whose_gpu_memory_is_not_visible_here_reports_none() -> None:
    # CUDA used by a child process (the python kind's entrypoint) is not seen by this process, which never
    # imported torch: the measurement neither imports it nor creates a CUDA context.
    script = (
        "import json, sys; from service.runners.usage import measured\n"
        "with measured('cuda') as usage: pass\n"
        "print(json.dumps([usage.resources, 'torch' in sys.modules]))"
    )
    answer = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=REPO)

    resources, imported_torch = json.loads(answer.stdout)
    assert "gpu_seconds" in resources
    assert "peak_gpu_memory_bytes" not in resources
    assert imported_torch is False


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda_available(), reason="needs PyTorch with a CUDA device")
def test_peak_gpu_memory_is_this_runs_own_peak() -> None:
    import torch

    torch.zeros(1, device="cuda")  # CUDA is initialised before the runs, as in a worker that served a cuda run
    with measured("cuda") as big:
        block = torch.ones(256 * 2**20, dtype=torch.uint8, device="cuda")
        del block
    with measured("cuda") as small:
        block = torch.ones(2**20, dtype=torch.uint8, device="cuda")
        del block

    assert big.resources["peak_gpu_memory_bytes"] >= 256 * 2**20
    assert small.resources["peak_gpu_memory_bytes"] < 64 * 2**20
    assert big.resources["gpu_seconds"] == big.resources["wall_seconds"]
