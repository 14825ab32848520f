"""The python kind: run a registered code version's ``module:function`` in a subprocess.

The archive (zip or tar.gz) is extracted into ``output_dir/code``, refusing
absolute paths, ``..`` members, links and special files. The function runs in
its own process group with the code folder as working directory and first on
``sys.path``, a minimal environment (no service secrets), ``PYTHONHASHSEED=0``,
seeded ``random``/``numpy``, and the spec's time limit, after which the group is
killed. It returns ``{name: number}`` or ``{"metrics": {...}, "model_file":
"name"}``, writes its model file(s) into ``output_dir`` and may write
``predictions.json``.
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
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from domain.pipeline import ENTRYPOINT
from service.ml.tabular import write_predictions
from service.runners.contract import ExecutionError, ExecutionRequest, ExecutionResult
from service.runners.scores import point

SHIM = Path(__file__).with_name("python_shim.py")
TAIL_BYTES = 4096
MAX_EXTRACTED_BYTES = 2 * 1024**3
PASSED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")
NOT_FOUND = 3


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


def execute_python(request: ExecutionRequest) -> ExecutionResult:
    """Extract the code archive and run the entrypoint under the spec's time limit."""
    spec = request.spec
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or not ENTRYPOINT.fullmatch(entrypoint):
        raise ExecutionError(f"spec.entrypoint must look like package.module:function, got {entrypoint!r}")
    limit = spec.get("time_limit_seconds", 3600)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise ExecutionError(f"spec.time_limit_seconds must be a positive number, got {limit!r}")
    if request.code_archive is None:
        raise ExecutionError("the python kind needs a code archive (a registered code version)")
    output_dir = request.output_dir.resolve()
    code_dir = output_dir / "code"
    files = extract_archive(request.code_archive, code_dir)
    schema = spec.get("params_schema") or {}
    params = {k: r["default"] for k, r in schema.items() if isinstance(r, dict) and "default" in r} | request.params
    private = output_dir / ".entrypoint"
    private.mkdir(exist_ok=True)
    request_file, answer_file = private / "request.json", private / "answer.json"
    log_file = output_dir / "entrypoint.log"
    request_file.write_text(
        json.dumps(
            {
                "entrypoint": entrypoint,
                "answer_file": str(answer_file),
                "datasets": [str(p.resolve()) for p in request.datasets],
                "params": params,
                "seed": request.seed,
                "device": request.device,
                "output_dir": str(output_dir),
            }
        ),
        encoding="utf-8",
    )
    environment = {k: os.environ[k] for k in PASSED_ENVIRONMENT if k in os.environ}
    environment |= {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SHIM.read_text(encoding="utf-8"), str(request_file), str(os.getpid())],
            cwd=code_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise ExecutionError(f"time limit of {limit:g} s exceeded") from None
        finally:
            if process.poll() is None:
                kill_group(process)
    answer = json.loads(answer_file.read_text(encoding="utf-8")) if answer_file.exists() else {}
    if returncode == NOT_FOUND and answer.get("not_found"):
        raise ExecutionError(f"entrypoint {entrypoint} not found")
    if returncode != 0 or not answer.get("ok"):
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"failed with exit status {returncode}"
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
    }
    model = _model_file(entrypoint, output_dir, named_model)
    return ExecutionResult(metrics, model, _predictions(entrypoint, output_dir), details)
