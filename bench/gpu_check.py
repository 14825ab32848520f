"""Device check: the torch pipeline and its reproduction on CUDA, with the local backend and through Ray.

What a machine with an NVIDIA GPU has to show for the runners, in one command
that ends in a few minutes, printing what it saw:

1. the machine: PyTorch's version and CUDA build, whether CUDA is available,
   each device's name and memory;
2. the local backend: a fresh ledger (SQLite in a temp dir, unless
   ``--database-url`` names a PostgreSQL), a generated table (``--rows``), a
   torch MLP pipeline; a run requested with ``device: auto``, executed by an
   in-process runner (``--device auto``, pre-forked workers); then its
   reproduction. Each run's device as the runner chose it (and why, when it
   chose the CPU), the device and GPU (model, CUDA, driver) its node
   captured, its GPU seconds and peak GPU memory, and the reproduction's
   verdict;
3. Ray (skipped, saying why, without Ray or with ``--no-ray``): a single-node
   Ray head on 127.0.0.1 offering the machine's GPUs, the ledger API and a
   ``mlledger runner --backend ray --device cuda`` process (``auto`` means
   the CPU for a runner on a cluster); the same pipeline asking for one GPU
   (``resources: {gpus: 1}``), a run and its reproduction, each a Ray job.

It exits 0 when every run ran on ``cuda`` and both reproductions were
verified; 1 when a step did not hold; 2 when PyTorch sees no CUDA device,
unless ``--allow-cpu``, which runs the same steps on the CPU to check the
script itself (then it expects ``cpu`` everywhere, with the reason recorded).

Run from the repository root::

    .venv/bin/python bench/gpu_check.py
    .venv/bin/python bench/gpu_check.py --allow-cpu --no-ray     # the script itself, on a machine without a GPU

Progress goes to stderr, the findings to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.append import fresh_settings, install_sigterm_handler, opened, say
from bench.runner_overhead import register_dataset, request_run, runner_process
from domain.run import Run
from service.bootstrap import Services

ACTOR = "user:device-check"
FEATURES = 8
SEED = 7


@dataclass
class Seen:
    """What one run showed."""

    label: str
    run_id: str
    status: str
    device: str | None
    note: str | None
    node_device: str | None
    node_gpu: str | None
    gpu_seconds: float | None
    peak_gpu_memory_bytes: int | None
    error: str | None
    seconds: float

    def line(self) -> str:
        memory = "-" if self.peak_gpu_memory_bytes is None else f"{self.peak_gpu_memory_bytes / 2**20:,.1f} MiB"
        gpu = "-" if self.gpu_seconds is None else f"{self.gpu_seconds:.2f} s"
        text = (
            f"{self.label:<18} {self.status:<10} {self.seconds:6.1f} s, device {self.device or '-':<5} "
            f"(node: {self.node_device or '-'}; GPU {self.node_gpu or 'none'}); "
            f"GPU time {gpu}, peak GPU memory {memory}"
        )
        if self.note:
            text += f"; why not cuda: {self.note}"
        if self.error:
            text += f"; error: {self.error[:300]}"
        return text


def machine() -> tuple[bool, list[str]]:
    """Whether PyTorch sees a CUDA device, and lines describing the machine."""
    import torch

    lines = [f"PyTorch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, Python {sys.version.split()[0]}"]
    available = bool(torch.cuda.is_available())
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(f"cuda:{index}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("CUDA: not available to PyTorch")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
        lines += [f"nvidia-smi: {line}" for line in smi.stdout.splitlines() if line.strip()]
    return available, lines


def table(rows: int, seed: int = 5) -> bytes:
    """A learnable binary classification table (CSV) with ``FEATURES`` features."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    label = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    out = io.StringIO()
    out.write(",".join([*(f"f{j}" for j in range(FEATURES)), "label"]) + "\n")
    for features, y in zip(x, label, strict=True):
        out.write(",".join(f"{v:.6f}" for v in features) + f",{y}\n")
    return out.getvalue().encode()


def prepare(services: Services, rows: int) -> tuple[str, str, str]:
    """Register the table and two torch pipelines (one asking Ray for a GPU); their names and the dataset id."""
    dataset_id = register_dataset(services, "device-check", table(rows))
    spec = {
        "features": [f"f{j}" for j in range(FEATURES)],
        "target": "label",
        "task": "classification",
        "hidden_layers": [64, 64],
    }
    services.ledger.add_pipeline_spec(name="mlp", kind="torch", spec=spec, actor=ACTOR)
    services.ledger.add_pipeline_spec(
        name="mlp-one-gpu", kind="torch", spec={**spec, "resources": {"gpus": 1}}, actor=ACTOR
    )
    return "mlp", "mlp-one-gpu", dataset_id


def wait_finished(services: Services, run_id: str, timeout: float) -> Run:
    """The run once it ended, or as it is after ``timeout`` seconds (then cancelled, so that no runner
    goes on with it)."""
    deadline = time.monotonic() + timeout
    while True:
        run: Run = services.ledger.get(run_id, Run)
        if run.finished:
            return run
        if time.monotonic() > deadline:
            say(f"run {run_id} did not end within {timeout:.0f} s (it is {run.status}): cancelling it")
            with contextlib.suppress(Exception):
                services.ledger.finish_run(run_id, "cancelled", "the device check stopped waiting", actor=ACTOR)
            return run
        time.sleep(0.2)


def seen(services: Services, label: str, run: Run, seconds: float) -> Seen:
    """What the run's events say about where it ran."""
    events = list(services.ledger.events.get(run.id))
    captured = next((e for e in events if isinstance(e, Run.EnvironmentCaptured)), None)
    attested = next((e for e in events if isinstance(e, Run.ExecutionAttested)), None)
    finished = next((e for e in events if isinstance(e, Run.Finished)), None)
    node = (attested.node_environment if attested is not None else None) or run.environment or {}
    gpu = node.get("gpu") if isinstance(node.get("gpu"), dict) else {}
    resources = run.resources or {}
    return Seen(
        label=label,
        run_id=str(run.id),
        status=run.status,
        device=captured.device if captured is not None else None,
        note=captured.device_note if captured is not None else None,
        node_device=node.get("device"),
        node_gpu=f"{gpu.get('model')}, CUDA {gpu.get('cuda')}, driver {gpu.get('driver')}" if gpu else None,
        gpu_seconds=resources.get("gpu_seconds"),
        peak_gpu_memory_bytes=resources.get("peak_gpu_memory_bytes"),
        error=finished.error if finished is not None else None,
        seconds=seconds,
    )


def run_and_reproduce(
    services: Services, pipeline: str, dataset_id: str, epochs: int, where: str, timeout: float
) -> tuple[list[Seen], str | None]:
    """A run of ``pipeline``, then its reproduction; what each showed and the original's verdict on it."""
    say(f"{where}: requesting a run of {pipeline} (device auto, {epochs} epochs)")
    started = time.monotonic()
    original = wait_finished(services, request_run(services, pipeline, dataset_id, SEED, {"epochs": epochs}), timeout)
    found = [seen(services, f"{where}: run", original, time.monotonic() - started)]
    if original.status != "succeeded":
        return found, None
    say(f"{where}: run {original.status}; requesting its reproduction")
    started = time.monotonic()
    again_id = services.ledger.request_again(str(original.id), ACTOR, reproduce=True).id
    again = wait_finished(services, again_id, timeout)
    found.append(seen(services, f"{where}: reproduction", again, time.monotonic() - started))
    deadline = time.monotonic() + 60
    while again.status == "succeeded" and not services.ledger.get(str(original.id), Run).verdicts:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    verdict = services.ledger.get(str(original.id), Run).verdicts.get(again_id)
    return found, verdict


@contextlib.contextmanager
def local_runner(services: Services) -> Iterator[None]:
    """An in-process runner on the local backend, ``--device auto``."""
    import threading

    from service.runners.runner import Runner

    runner = Runner(services, device="auto", concurrency=1, say=say)
    say(f"local runner: device {runner.device}" + (f" ({runner.device_note})" if runner.device_note else ""))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), name="device-check-runner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)


def ray_missing() -> str | None:
    """Why the Ray step cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install -e '.[ray]')"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL to use instead of a temp SQLite file")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the generated table (default 20,000)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each torch run (default 5)")
    parser.add_argument("--timeout", type=float, default=240, help="longest wait for one run, seconds (default 240)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray step")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU where no CUDA device is seen")
    args = parser.parse_args(argv)
    install_sigterm_handler()

    available, lines = machine()
    print("\n".join(lines), flush=True)
    if not available and not args.allow_cpu:
        print("no CUDA device: nothing to check here (--allow-cpu checks the script itself on the CPU)")
        return 2
    expected = "cuda" if available else "cpu"
    results: list[Seen] = []
    verdicts: dict[str, str | None] = {}
    skipped: str | None = "--no-ray" if args.no_ray else ray_missing()

    with fresh_settings(args.database_url or "", args.database_url is None) as settings, opened(settings) as services:
        plain, one_gpu, dataset_id = prepare(services, args.rows)
        with local_runner(services):
            found, verdicts["local"] = run_and_reproduce(
                services, plain, dataset_id, args.epochs, "local", args.timeout
            )
            results += found
        if skipped is None:
            from bench.ray_head import ray_head

            gpus = 0
            if available:
                import torch

                gpus = torch.cuda.device_count()
            with ray_head(num_cpus=4, num_gpus=gpus) as cluster, tempfile.TemporaryDirectory() as logs:
                # a runner on a cluster takes cuda only when told to (auto means cpu there: the nodes decide)
                device = "cuda" if available else "auto"
                with runner_process(services, Path(logs), "ray", cluster.address, cluster.token, device=device):
                    # on the CPU (--allow-cpu) a job asking for a GPU would wait for one for ever
                    pipeline = one_gpu if available else plain
                    found, verdicts["ray"] = run_and_reproduce(
                        services, pipeline, dataset_id, args.epochs, "ray", args.timeout
                    )
                    results += found

    print()
    for result in results:
        print(result.line())
    for where, verdict in verdicts.items():
        print(f"{where}: reproduction verdict: {verdict or 'none'}")
    if skipped is not None:
        print(f"ray: skipped ({skipped})")
    held = (
        all(r.status == "succeeded" and r.device == expected and r.node_device == expected for r in results)
        and all(verdict == "verified" for verdict in verdicts.values())
        and (expected == "cpu" or all((r.gpu_seconds or 0) > 0 for r in results))
        and len(results) == 2 * len(verdicts)
    )
    print(f"device check on {expected}: {'HELD' if held else 'NOT HELD'}")
    return 0 if held else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
