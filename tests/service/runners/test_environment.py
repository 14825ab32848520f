"""Capturing what a run executes on, resolving its device, and naming what differs."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys

import pytest

from service.runners.environment import (
    capture_environment,
    environment_diff,
    environment_digest,
    kind_uses_torch,
    resolve_device,
)
from service.runners.executors import ExecutionError

TORCH_SEES_CUDA = importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available()
no_gpu_here = pytest.mark.skipif(TORCH_SEES_CUDA, reason="this machine has a CUDA device")


def test_capture_describes_interpreter_packages_machine_and_seed() -> None:
    captured = capture_environment("cpu", 42, {"deterministic": True})

    expected = {"python", "packages", "os", "kernel", "cpu", "memory_bytes", "gpu", "torch", "device", "seed", "flags"}
    assert expected | {"digest"} == set(captured)
    assert captured["python"]["implementation"] == "CPython"
    assert captured["packages"]["scikit-learn"]
    assert list(captured["packages"]) == sorted(captured["packages"])
    assert captured["cpu"]["count"] >= 1
    assert captured["memory_bytes"] > 0
    assert (captured["seed"], captured["device"], captured["flags"]) == (42, "cpu", {"deterministic": True})
    assert captured["digest"] == environment_digest(captured)


def test_the_same_inputs_give_the_same_digest_and_other_inputs_another() -> None:
    first = capture_environment("cpu", 1, {"a": 1})
    second = capture_environment("cpu", 1, {"a": 1})
    other_seed = capture_environment("cpu", 2, {"a": 1})

    assert first["digest"] == second["digest"]
    assert first["digest"].startswith("sha256:") and len(first["digest"]) == 71
    assert other_seed["digest"] != first["digest"]


@no_gpu_here
def test_auto_falls_back_to_cpu_with_a_reason_when_there_is_no_gpu() -> None:
    device, reason = resolve_device("auto")

    assert device == "cpu"
    assert reason is not None and ("no CUDA device" in reason or "not installed" in reason)


@no_gpu_here
def test_cuda_requested_without_a_gpu_is_refused() -> None:
    with pytest.raises(ExecutionError, match=r"^cuda requested but "):
        resolve_device("cuda")


def test_cpu_is_always_available_and_unknown_devices_are_refused() -> None:
    assert resolve_device("cpu") == ("cpu", None)
    with pytest.raises(ExecutionError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")


def test_diff_names_a_changed_package_version_and_changed_fields() -> None:
    original = capture_environment("cpu", 1, {})
    changed = copy.deepcopy(original)
    changed["packages"]["numpy"] = "0.0.1"
    changed["packages"]["newcomer"] = "1.0"
    del changed["packages"]["scikit-learn"]
    changed["cpu"]["count"] = original["cpu"]["count"] + 1

    diff = environment_diff(original, changed)

    assert diff["identical"] is False
    assert diff["packages"]["changed"] == {"numpy": {"a": original["packages"]["numpy"], "b": "0.0.1"}}
    assert diff["packages"]["only_in_b"] == {"newcomer": "1.0"}
    assert list(diff["packages"]["only_in_a"]) == ["scikit-learn"]
    assert diff["fields"] == {"cpu.count": {"a": original["cpu"]["count"], "b": original["cpu"]["count"] + 1}}


def test_diff_of_a_capture_with_itself_is_empty() -> None:
    captured = capture_environment("cpu", 1, {})

    diff = environment_diff(captured, copy.deepcopy(captured))

    assert diff == {"identical": True, "fields": {}, "packages": {"changed": {}, "only_in_a": {}, "only_in_b": {}}}


def test_only_scikit_learn_runs_are_known_never_to_load_torch() -> None:
    assert kind_uses_torch("sklearn") is False
    assert kind_uses_torch("torch") is True
    assert kind_uses_torch("python") is True  # arbitrary code may import it


CAPTURE_WITHOUT_TORCH = """
import json, sys
from service.runners.environment import capture_environment
first = capture_environment("cpu", 3, {}, uses_torch=False)
second = capture_environment("cpu", 3, {}, uses_torch=False)
print(json.dumps({"first": first, "second": second, "torch_imported": "torch" in sys.modules}))
"""


def test_a_capture_for_a_run_without_torch_does_not_import_it_and_is_stable() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", CAPTURE_WITHOUT_TORCH], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(answer.stdout.strip().splitlines()[-1])

    assert found["torch_imported"] is False
    first, second = found["first"], found["second"]
    assert first["digest"] == second["digest"] == environment_digest(first)
    here = capture_environment("cpu", 3, {}, uses_torch=False)  # in another process: all but the installed
    assert environment_diff(first, here)["fields"] == {}  # packages, which others may change meanwhile
    if importlib.util.find_spec("torch") is None:
        assert first["torch"] is None
        return
    import torch

    assert first["torch"] == {"version": torch.__version__, "built_with_cuda": torch.version.cuda, "imported": False}
    loaded = capture_environment("cpu", 3, {})
    assert loaded["torch"]["version"] == first["torch"]["version"]
    assert {k: v for k, v in loaded.items() if k not in ("torch", "gpu", "digest")} == {
        k: v for k, v in first.items() if k not in ("torch", "gpu", "digest")
    }
