"""The python kind: run a registered code version's ``module:function`` in a sandboxed subprocess.

The archive (zip or tar.gz) is extracted into ``output_dir/code``, refusing
absolute paths, ``..`` members, links and special files. The function runs in
the bubblewrap sandbox of :mod:`service.runners.sandbox` (no network unless the
spec says ``network: true``; it sees only the interpreter, this run's code,
datasets and output folder), in its own process group with the code folder as
working directory and first on ``sys.path``, a minimal environment (no service
secrets), ``PYTHONHASHSEED=0``, seeded ``random``/``numpy``, and the spec's
time limit, after which the group is killed. It receives its paths as it sees
them (``/sandbox/...``), returns ``{name: number}`` or ``{"metrics": {...},
"model_file": "name"}``, writes its model file(s) into its ``output_dir``
(``output_dir/outputs`` on the runner) and may write ``predictions.json``
there. The executor's own files (``entrypoint.log``, and the runner's
``result.json`` beside it) are out of its reach, and what it wrote is scrubbed
of links and special files before anything reads it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from domain.pipeline import ENTRYPOINT
from service.ml.tabular import write_predictions
from service.runners import sandbox
from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult
from service.runners.sandbox import Folders
from service.runners.scores import point

SHIM = Path(__file__).with_name("python_shim.py")
TAIL_BYTES = 4096
MAX_EXTRACTED_BYTES = 2 * 1024**3
PASSED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")
NOT_FOUND = 3
OUTPUTS = "outputs"
MAX_ANSWER_BYTES = 64 * 1024**2


def _member_path(name: str) -> PurePosixPath:
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", normalized) or ".." in path.parts:
        raise ExecutionError(f"code archive member {name!r} escapes the code folder (absolute path or ..)")
    return path


def _target(root: Path, name: str) -> Path:
    target = (root / _member_path(name)).resolve()
    if target != root and root not in target.parents:
        raise ExecutionError(f"code archive member {name!r} escapes the code folder")
    return target


def extract_archive(archive: Path, destination: Path) -> int:
    """Extract a zip or tar(.gz) archive safely; return the number of files written."""
    destination.mkdir(parents=True, exist_ok=True)
    root, written, total = destination.resolve(), 0, 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for info in members:
                _target(root, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ExecutionError(f"code archive member {info.filename!r} is a link; only files are extracted")
            for info in members:
                target = _target(root, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += info.file_size
                if total > MAX_EXTRACTED_BYTES:
                    raise ExecutionError(f"code archive expands beyond {MAX_EXTRACTED_BYTES} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                written += 1
        return written
    if not tarfile.is_tarfile(archive):
        raise ExecutionError("code archive is neither a zip nor a tar(.gz) file")
    with tarfile.open(archive, "r:*") as bundle_tar:
        tar_members = bundle_tar.getmembers()
        for member in tar_members:
            _target(root, member.name)
            if not (member.isfile() or member.isdir()):
                raise ExecutionError(f"code archive member {member.name!r} is a link or special file")
        for member in tar_members:
            target = _target(root, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            total += member.size
            if total > MAX_EXTRACTED_BYTES:
                raise ExecutionError(f"code archive expands beyond {MAX_EXTRACTED_BYTES} bytes")
            target.parent.mkdir(parents=True, exist_ok=True)
            contents = bundle_tar.extractfile(member)
            assert contents is not None  # a regular file always has contents
            with contents, target.open("wb") as sink:
                shutil.copyfileobj(contents, sink)
            written += 1
    return written


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a process started in its own session, with everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def output_tail(path: Path, size: int = TAIL_BYTES) -> str:
    """The last ``size`` bytes of a log file, as text."""
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode("utf-8", errors="replace")


def _metrics(entrypoint: str, returned: Any) -> tuple[list[dict[str, Any]], Any]:
    if not isinstance(returned, dict):
        raise ExecutionError(f"entrypoint {entrypoint} must return a dict of metrics, got {type(returned).__name__}")
    named = returned.get("metrics")
    values, model_name = (named, returned.get("model_file")) if isinstance(named, dict) else (returned, None)
    points = []
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ExecutionError(f"entrypoint {entrypoint} returned metric {key!r} = {value!r}, not a finite number")
        points.append(point(str(key), value, 0))
    return points, model_name


def _model_file(entrypoint: str, output_dir: Path, named: Any) -> Path:
    if named is not None:
        if not isinstance(named, str):
            raise ExecutionError(f"entrypoint {entrypoint} returned a model_file that is not a file name")
        candidate = (output_dir / named).resolve()
        if output_dir not in candidate.parents or not candidate.is_file():
            raise ExecutionError(f"entrypoint {entrypoint} named model file {named!r}, which it did not write")
        return candidate
    written = sorted(p for p in output_dir.iterdir() if p.is_file() and p.name.startswith("model"))
    if not written:
        raise ExecutionError(
            f"entrypoint {entrypoint} wrote no model file into output_dir (name it model* or return its model_file)"
        )
    return written[0]


def _predictions(entrypoint: str, output_dir: Path) -> Path:
    path = output_dir / "predictions.json"
    if not path.exists():
        return write_predictions(path, [], [])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ExecutionError(f"entrypoint {entrypoint} wrote a predictions.json that is not JSON") from None
    if not (isinstance(data, dict) and isinstance(data.get("ids"), list) and isinstance(data.get("values"), list)):
        raise ExecutionError(f"entrypoint {entrypoint} wrote predictions.json without ids and values lists")
    if len(data["ids"]) != len(data["values"]):
        raise ExecutionError(f"entrypoint {entrypoint} wrote predictions.json with unequal ids and values")
    return path


def _answer(answer_file: Path) -> dict[str, Any]:
    if not answer_file.is_file():
        return {}
    if answer_file.stat().st_size > MAX_ANSWER_BYTES:
        raise ExecutionError(f"the entrypoint's answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(answer_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ExecutionError("the entrypoint's answer is not JSON (was the answer file overwritten?)") from None
    return answer if isinstance(answer, dict) else {}


def execute_python(request: ExecutionRequest) -> ExecutionResult:
    """Extract the code archive and run the entrypoint, sandboxed, under the spec's time limit."""
    spec = request.spec
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or not ENTRYPOINT.fullmatch(entrypoint):
        raise ExecutionError(f"spec.entrypoint must look like package.module:function, got {entrypoint!r}")
    limit = spec.get("time_limit_seconds", 3600)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise ExecutionError(f"spec.time_limit_seconds must be a positive number, got {limit!r}")
    network = spec.get("network", False)
    if not isinstance(network, bool):
        raise ExecutionError(f"spec.network must be true or false, got {network!r}")
    if request.code_archive is None:
        raise ExecutionError("the python kind needs a code archive (a registered code version)")
    output_dir = request.output_dir.resolve()
    host = Folders(
        code=output_dir / "code",
        output=output_dir / OUTPUTS,
        control=output_dir / ".entrypoint",
        datasets=tuple(p.resolve() for p in request.datasets),
    )
    files = extract_archive(request.code_archive, host.code)
    host.output.mkdir(exist_ok=True)
    host.control.mkdir(exist_ok=True)
    schema = spec.get("params_schema") or {}
    params = {k: r["default"] for k, r in schema.items() if isinstance(r, dict) and "default" in r} | request.params
    environment = {k: os.environ[k] for k in PASSED_ENVIRONMENT if k in os.environ}
    environment |= {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    log_file = output_dir / "entrypoint.log"
    with sandbox.prepare(host, environment, network=network, device=request.device) as prepared:
        inside = prepared.inside
        request_file, answer_file = host.control / "request.json", host.control / "answer.json"
        request_file.write_text(
            json.dumps(
                {
                    "entrypoint": entrypoint,
                    "answer_file": str(inside.control / "answer.json"),
                    "datasets": [str(p) for p in inside.datasets],
                    "params": params,
                    "seed": request.seed,
                    "device": request.device,
                    "output_dir": str(inside.output),
                }
            ),
            encoding="utf-8",
        )
        # Sandboxed, the entrypoint's parent is bwrap's init (pid 1 of its pid namespace), which
        # --die-with-parent ties to this process; unsandboxed, the shim watches this process itself.
        parent = "0" if prepared.sandboxed else str(os.getpid())
        shim = ["-c", SHIM.read_text(encoding="utf-8"), str(inside.control / "request.json"), parent]
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                prepared.argv(shim),
                cwd=host.code,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=prepared.environment,
                start_new_session=True,
                pass_fds=prepared.pass_fds,
            )
            prepared.launched()
            try:
                returncode = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                raise ExecutionError(f"time limit of {limit:g} s exceeded") from None
            finally:
                if process.poll() is None:
                    kill_group(process)
                ended = prepared.wait_ended()
    if not ended:
        raise ExecutionError("the entrypoint's sandbox still had processes running after it exited")
    # Nothing of the sandbox is left to write into its folders: make them safe to read.
    for folder in (host.control, host.output, host.code):
        sandbox.scrub(folder)
    answer = _answer(answer_file)
    if returncode == NOT_FOUND and answer.get("not_found"):
        raise ExecutionError(f"entrypoint {entrypoint} not found")
    if returncode != 0 or not answer.get("ok"):
        signal_number = prepared.signal_of(returncode)
        how = f"was killed by signal {signal_number}" if signal_number else f"failed with exit status {returncode}"
        raise ExecutionError(f"entrypoint {entrypoint} {how}; output tail:\n{output_tail(log_file)}")
    metrics, named_model = _metrics(entrypoint, answer.get("returned"))
    details = {
        "entrypoint": entrypoint,
        "code_files": files,
        "params": params,
        "log_file": log_file.name,
        "output_tail": output_tail(log_file),
        "determinism": {"seed": request.seed, "PYTHONHASHSEED": "0", "random_seeded": True, "numpy_seeded": True},
        "metrics_reported_live": 0,
        "sandbox": prepared.description,
    }
    model = _model_file(entrypoint, host.output, named_model)
    return ExecutionResult(metrics, model, _predictions(entrypoint, host.output), details)
