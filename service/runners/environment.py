"""What a run executes on: captured before execution, digested, and compared for reproductions.

The capture lists the interpreter, every installed distribution, the OS and
kernel, CPU and memory, the GPU stack when torch sees CUDA (model and driver
from nvidia-smi, so that capturing does not initialise CUDA before a fork), torch's version and
determinism switches, the seed and the executor's flags. Its ``digest`` is the
SHA-256 of the canonical JSON of everything else, so two runs on the same
environment with the same inputs record the same digest.

A run of a kind that never loads torch (``sklearn``) can be captured with
``uses_torch=False``: torch is then described from its installed files without
importing it (its version and the CUDA version it was built with, marked
``"imported": false``; the determinism switches of a torch that the run never
loads are left out), and the GPU stack comes from nvidia-smi alone. Importing
torch costs seconds in a fresh interpreter (a Ray job is one). Which form a
capture takes depends only on the run's kind, so two captures of the same kind
on one machine still agree.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from domain.environment import environment_diff, environment_digest
from service.runners.contract import ExecutionError

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@functools.cache  # fixed for the life of the process
def _packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(name.lower().replace("_", "-"), distribution.version)
    return dict(sorted(found.items()))


@functools.cache  # fixed for the life of the process
def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.cache  # fixed for the life of the process
def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_smi() -> tuple[str | None, str | None]:
    """GPU model and driver version from nvidia-smi, or Nones when it is absent."""
    model, driver, _count = _nvidia_smi_all()
    return model, driver


@functools.cache  # fixed for the life of the process
def _nvidia_smi_all() -> tuple[str | None, str | None, int]:
    """The first GPU's model and the driver version from nvidia-smi, and how many GPUs it lists (Nones, 0 without)."""
    if shutil.which("nvidia-smi") is None:
        return None, None, 0
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None, 0
    lines = [line for line in answer.stdout.strip().splitlines() if "," in line]
    if not lines:
        return None, None, 0
    name, driver = lines[0].rsplit(",", 1)
    return name.strip(), driver.strip(), len(lines)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device, asked without initialising CUDA in this process.

    The NVML-based check leaves processes forked from this one free to use CUDA
    (a runner captures the environment, then forks the execution).
    """
    import torch

    previous = os.environ.get(NVML_CHECK)
    os.environ[NVML_CHECK] = "1"
    try:
        return bool(torch.cuda.is_available())
    finally:
        if previous is None:
            os.environ.pop(NVML_CHECK, None)
        else:
            os.environ[NVML_CHECK] = previous


TORCH_FREE_KINDS = frozenset({"sklearn"})
"""Pipeline kinds whose execution never loads torch (the python kind runs arbitrary code, so it may)."""


def kind_uses_torch(kind: str) -> bool:
    """Whether a run of pipeline ``kind`` may load torch (and its capture should describe a loaded torch)."""
    return kind not in TORCH_FREE_KINDS


@functools.cache  # fixed for the life of the process
def _torch_files() -> dict[str, Any] | None:
    """torch's version and the CUDA version it was built with, read from ``torch/version.py`` without importing it.

    ``torch.__version__`` and ``torch.version.cuda`` are these same assignments.
    """
    spec = importlib.util.find_spec("torch")
    if spec is None:
        return None
    found: dict[str, Any] = {"__version__": None, "cuda": None}
    for folder in spec.submodule_search_locations or []:
        try:
            tree = ast.parse((Path(folder) / "version.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and target.id in found and isinstance(value, ast.Constant):
                found[target.id] = value.value
        break
    version = found["__version__"]
    if not isinstance(version, str):
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            version = None
    cuda = found["cuda"] if isinstance(found["cuda"], str) else None
    return {"version": version, "built_with_cuda": cuda, "imported": False}


def _torch_unloaded() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """torch described from its files, and the GPU stack from nvidia-smi: nothing imported, CUDA untouched."""
    about = _torch_files()
    model, driver, count = _nvidia_smi_all()
    gpu = None if model is None else {"model": model, "count": count, "driver": driver}
    return (None if about is None else dict(about)), gpu


def _torch() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """torch's version and determinism switches, and the GPU stack when it sees CUDA."""
    if importlib.util.find_spec("torch") is None:
        return None, None
    import torch

    about = {
        "version": torch.__version__,
        "built_with_cuda": torch.version.cuda,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "num_threads": torch.get_num_threads(),
    }
    if not cuda_available():
        return about, None
    model, driver = _nvidia_smi()
    if model is None and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        model = torch.cuda.get_device_name(0)
    gpu = {
        "model": model,
        "count": torch.cuda.device_count(),
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
    }
    return about, gpu


def capture_environment(
    device: str, seed: int, extra_flags: dict[str, Any], *, uses_torch: bool = True
) -> dict[str, Any]:
    """Describe this machine and interpreter for a run on ``device`` with ``seed``, with a digest.

    ``uses_torch=False`` (a run that never loads torch, see :func:`kind_uses_torch`) describes torch
    without importing it.
    """
    torch_about, gpu = _torch() if uses_torch else _torch_unloaded()
    environment: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "packages": _packages(),
        "os": {"platform": platform.platform(), "system": platform.system(), "machine": platform.machine()},
        "kernel": {"release": platform.release(), "version": platform.uname().version},
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "memory_bytes": _memory_bytes(),
        "gpu": gpu,
        "torch": torch_about,
        "device": device,
        "seed": seed,
        "flags": dict(extra_flags),
    }
    environment["digest"] = environment_digest(environment)
    return environment


def _no_cuda_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if cuda_available():
        return None
    if torch.version.cuda is None:
        return f"torch reports no CUDA device (torch {torch.__version__} is built without CUDA)"
    return "torch reports no CUDA device"


def resolve_device(requested: str) -> tuple[str, str | None]:
    """The device to run on and, when ``auto`` falls back to cpu, why; refuse unavailable ``cuda``."""
    if requested == "cpu":
        return "cpu", None
    if requested not in ("auto", "cuda"):
        raise ExecutionError(f"device must be auto, cpu or cuda, got {requested!r}")
    reason = _no_cuda_reason()
    if reason is None:
        return "cuda", None
    if requested == "cuda":
        raise ExecutionError(f"cuda requested but {reason}")
    return "cpu", reason


__all__ = [
    "capture_environment",
    "cuda_available",
    "environment_diff",
    "environment_digest",
    "kind_uses_torch",
    "resolve_device",
]
