"""The python kind runs user code in a bubblewrap sandbox: what hostile code tries fails, and honest code still works.

These tests need a working ``bwrap`` (``make test`` installs Debian's
bubblewrap when run as root); without one they fail with the reason, as a
python run would.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import select
import signal
import stat
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.hostile_code import (
    ATTEMPTS,
    HOSTILE_PY,
    KEK_BYTES,
    LEDGER_KEY_TEXT,
    NETWORK_PY,
    SECRET_ENVIRONMENT,
    Listener,
    files_containing,
    hostile_params,
    plant_other_run,
    secrets_of,
)

from domain.errors import InvalidPayload
from domain.pipeline import check_spec
from service.runners import sandbox
from service.runners.executors import ExecutionError, ExecutionRequest, ExecutionResult, execute


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A TCP listener on the runner's 127.0.0.1."""
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """A data directory's key folder, as a ledger keeps it (owner-only files)."""
    keys = tmp_path / "data" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    for name, data in (("ledger.pem", LEDGER_KEY_TEXT), ("subject-kek.bin", KEK_BYTES)):
        (keys / name).write_bytes(data)
        (keys / name).chmod(0o600)
    return keys


@pytest.fixture
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials in the runner's environment, as a deployment would set them."""
    for name, value in SECRET_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return SECRET_ENVIRONMENT


def _zip(path: Path, source: str) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("train.py", source)
    return path


def _request(
    output: Path, archive: Path, entrypoint: str = "train:main", datasets: list[Path] | None = None, **spec: Any
) -> ExecutionRequest:
    output.mkdir(parents=True, mode=0o700)
    params = spec.pop("params", {})
    return ExecutionRequest(
        "python", {"entrypoint": entrypoint} | spec, params, 7, "cpu", datasets or [], archive, output
    )


def _values(result: ExecutionResult) -> dict[str, float]:
    return {m["key"]: m["value"] for m in result.metrics}


def _small_csv(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "label"])
        for i in range(60):
            writer.writerow([i % 7, (i * 3) % 5, int(i % 7 > 3)])
    return path


# -- hostile code --------------------------------------------------------------------------------


def test_a_hostile_entrypoint_is_denied_every_secret_and_leaks_nothing_into_its_outputs(
    tmp_path: Path, keys_dir: Path, secret_environment: dict[str, str], listener: Listener
) -> None:
    runs = tmp_path / "work"
    other_run = plant_other_run(runs)
    request = _request(
        runs / "this-run",
        _zip(tmp_path / "code.zip", HOSTILE_PY),
        params=hostile_params(keys_dir, other_run, listener),
    )

    result = execute(request)

    values = _values(result)
    attempts = json.loads((request.output_dir / "outputs" / "attempts.json").read_text())
    assert set(attempts) == set(ATTEMPTS)
    assert {name: values[f"leaked_{name}"] for name in ATTEMPTS} == dict.fromkeys(ATTEMPTS, 0.0), attempts
    assert values["attempts"] == len(ATTEMPTS)
    for name in ("ledger_key", "subject_kek", "other_run_file", "other_run_listing", "runs_listing", "write_beside"):
        assert attempts[name]["why"].startswith("FileNotFoundError"), (name, attempts[name])
    assert attempts["network"]["why"].startswith(("ConnectionRefusedError", "OSError", "TimeoutError")), attempts
    assert listener.received == []
    assert not (runs / "planted.txt").exists()
    assert files_containing(request.output_dir, secrets_of(keys_dir)) == []
    assert not any(secret in json.dumps(result.details) for secret in SECRET_ENVIRONMENT.values())
    assert result.details["sandbox"]["kind"] == "bubblewrap"
    assert result.details["sandbox"]["network"] is False


def test_links_and_special_files_an_entrypoint_leaves_are_removed_before_anything_reads_them(
    tmp_path: Path, keys_dir: Path, listener: Listener
) -> None:
    runs = tmp_path / "work"
    request = _request(
        runs / "this-run",
        _zip(tmp_path / "code.zip", HOSTILE_PY),
        params=hostile_params(keys_dir, plant_other_run(runs), listener),
    )

    result = execute(request)

    outputs = request.output_dir / "outputs"
    assert result.model_file == outputs / "model.json"
    assert json.loads(result.model_file.read_text()) == {"weights": [1, 2, 3]}
    assert not (outputs / "model.0-link").exists() and not (outputs / "model.0-link").is_symlink()
    assert json.loads(result.predictions_file.read_text()) == {"ids": [], "values": []}
    assert stat.S_ISREG(result.predictions_file.lstat().st_mode)


LINGERING_PY = """
import os, time

def main(request):
    out, key = request["output_dir"], request["params"]["ledger_key"]
    with open(os.path.join(out, "model.json"), "w") as handle:
        handle.write("{}")
    if os.fork() == 0:
        os.setsid()
        ended = time.monotonic() + 30
        while time.monotonic() < ended:
            for name in ("model.0-link", "predictions.json"):
                try:
                    os.symlink(key, os.path.join(out, name))
                except OSError:
                    pass
        os._exit(0)
    time.sleep(0.2)
    return {"planted": 1}
"""


@pytest.mark.parametrize("attempt", range(3))
def test_what_the_entrypoint_left_running_is_gone_before_its_outputs_are_read(
    tmp_path: Path, keys_dir: Path, attempt: int
) -> None:
    request = _request(
        tmp_path / "run",
        _zip(tmp_path / "code.zip", LINGERING_PY),
        params={"ledger_key": str(keys_dir / "ledger.pem")},
    )

    result = execute(request)

    outputs = request.output_dir / "outputs"
    assert result.model_file == outputs / "model.json"
    time.sleep(0.2)
    assert sorted(p.name for p in outputs.iterdir()) == ["model.json", "predictions.json"]
    assert not any(p.is_symlink() for p in outputs.iterdir())
    assert json.loads(result.predictions_file.read_text()) == {"ids": [], "values": []}


def _sleeping_sandbox(tmp_path: Path) -> tuple[subprocess.Popen[bytes], sandbox.Prepared]:
    """A bare bwrap sandbox running ``sleep``, and a Prepared holding its --info-fd pipe."""
    bwrap, _, _ = sandbox.bubblewrap()
    info_read, info_write = os.pipe()
    namespaces = ["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/"]
    process = subprocess.Popen(
        [bwrap, *namespaces, "--info-fd", str(info_write), "--", "sleep", "60"],
        pass_fds=(info_write,),
        start_new_session=True,
    )
    os.close(info_write)
    select.select([info_read], [], [], 10)
    os.set_blocking(info_read, False)
    folders = sandbox.Folders(tmp_path, tmp_path, tmp_path)
    return process, sandbox.Prepared([], {}, folders, sandboxed=True, info=info_read)


def test_waiting_for_the_end_of_a_sandbox_waits_for_its_init_not_just_for_bwrap(tmp_path: Path) -> None:
    running, still = _sleeping_sandbox(tmp_path)
    ending, later = _sleeping_sandbox(tmp_path)
    try:
        assert still.wait_ended(timeout=0.3) is False
        threading.Timer(0.5, os.killpg, (ending.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        assert later.wait_ended(timeout=10) is True
        assert 0.4 < time.monotonic() - started < 5
    finally:
        for process in (running, ending):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        still.close()
        later.close()


def test_scrub_removes_links_fifos_and_set_id_bits_and_opens_locked_folders(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "deep").mkdir(parents=True)
    (folder / "model.pkl").symlink_to("/etc/hostname")
    (folder / "deep" / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(folder / "predictions.json")
    program = folder / "deep" / "program"
    program.write_bytes(b"#!/bin/sh\n")
    program.chmod(0o6755)
    (folder / "locked").mkdir()
    (folder / "locked" / "inner-link").symlink_to("/etc/hostname")
    (folder / "locked").chmod(0)

    removed = sandbox.scrub(folder)

    assert removed == 4
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["deep", "deep/program", "locked"]
    assert stat.S_IMODE(program.stat().st_mode) == 0o755


# -- honest code ---------------------------------------------------------------------------------


def test_network_true_in_the_spec_lets_the_entrypoint_connect(tmp_path: Path, listener: Listener) -> None:
    archive = _zip(tmp_path / "code.zip", NETWORK_PY)
    closed = execute(_request(tmp_path / "closed", archive, params={"port": listener.port}))
    opened = execute(_request(tmp_path / "open", archive, network=True, params={"port": listener.port}))

    assert _values(closed) == {"connected": 0.0}
    assert _values(opened) == {"connected": 1.0}
    assert opened.details["sandbox"]["network"] is True
    deadline = time.monotonic() + 5
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.received == [b"hello"]


SCIENTIFIC_PY = """
import csv, importlib.util, json, os, pickle

def main(request):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    with open(request["datasets"][0]) as handle:
        rows = list(csv.DictReader(handle))
    x = np.array([[float(r["x1"]), float(r["x2"])] for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    model = LogisticRegression().fit(x, y)
    with open(os.path.join(request["output_dir"], "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    metrics = {"accuracy": float(model.score(x, y)), "rows": len(rows), "torch": 0}
    if request["params"]["torch"]:
        import torch
        metrics["torch"] = float(torch.tensor([1.0, 2.0]).sum())
    metrics["dataset_named"] = int(os.path.basename(request["datasets"][0]) == "small.csv")
    metrics["dataset_read_only"] = int(not os.access(request["datasets"][0], os.W_OK))
    return metrics
"""


def test_numpy_sklearn_and_torch_import_and_fit_inside_the_sandbox(tmp_path: Path) -> None:
    has_torch = importlib.util.find_spec("torch") is not None
    data = _small_csv(tmp_path / "small.csv")
    request = _request(
        tmp_path / "run",
        _zip(tmp_path / "code.zip", SCIENTIFIC_PY),
        datasets=[data],
        params={"torch": has_torch},
    )

    result = execute(request)

    values = _values(result)
    assert values["accuracy"] > 0.8 and values["rows"] == 60
    assert values["torch"] == (3.0 if has_torch else 0.0)
    assert values["dataset_named"] == 1 and values["dataset_read_only"] == 1
    assert result.model_file.name == "model.pkl"


INSIDE_PY = """
import json, os

def main(request):
    with open(os.path.join(request["output_dir"], "model.json"), "w") as handle:
        json.dump({
            "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": os.getcwd(),
            "environment": sorted(os.environ), "root": sorted(os.listdir("/")),
            "request": {k: request[k] for k in ("datasets", "output_dir")},
            "writable_root": os.access("/", os.W_OK), "writable_usr": os.access("/usr", os.W_OK),
        }, handle)
    return {"ok": 1}
"""


def test_the_entrypoint_runs_as_an_unprivileged_user_on_fixed_paths_with_the_allow_listed_environment(
    tmp_path: Path, secret_environment: dict[str, str]
) -> None:
    data = _small_csv(tmp_path / "small.csv")
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY), datasets=[data])

    seen = json.loads(execute(request).model_file.read_text())

    assert (seen["uid"], seen["gid"]) == (65534, 65534)
    assert seen["pid"] < 10  # its own pid namespace
    assert seen["cwd"] == "/sandbox/code"
    assert seen["request"] == {"datasets": ["/sandbox/datasets/0/small.csv"], "output_dir": "/sandbox/output"}
    assert not set(seen["environment"]) & set(SECRET_ENVIRONMENT)
    assert set(seen["environment"]) <= {*sandbox_environment_names()}
    assert "sandbox" in seen["root"] and "home" not in seen["root"] and "var" not in seen["root"]
    assert seen["writable_root"] is False and seen["writable_usr"] is False


def sandbox_environment_names() -> set[str]:
    """Every variable the python kind may pass (its allow-list and its own switches), and what bwrap and Python set."""
    from service.runners.python_kind import PASSED_ENVIRONMENT

    own = {"PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    return {*PASSED_ENVIRONMENT, *own, "PWD", "LC_CTYPE"}


DEVICES_PY = """
import glob, json, os

def main(request):
    with open(os.path.join(request["output_dir"], "model.json"), "w") as handle:
        json.dump({
            "nvidia": sorted(glob.glob("/dev/nvidia*")), "sys": os.path.isdir("/sys/devices"),
            "sys_writable": os.access("/sys", os.W_OK), "device": request["device"],
        }, handle)
    return {"ok": 1}
"""


def test_a_cuda_run_also_sees_the_nvidia_device_nodes_and_a_read_only_sys(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "code.zip", DEVICES_PY)
    request = _request(tmp_path / "run", archive)
    cuda = ExecutionRequest(**{**request.__dict__, "device": "cuda"})
    cpu_view = json.loads(execute(_request(tmp_path / "cpu", archive)).model_file.read_text())

    seen = json.loads(execute(cuda).model_file.read_text())

    assert seen == {
        "nvidia": sorted(str(p) for p in Path("/dev").glob("nvidia*")),
        "sys": True,
        "sys_writable": False,
        "device": "cuda",
    }
    assert (cpu_view["nvidia"], cpu_view["sys"]) == ([], False)


SPAWNING_PY = """
import os, subprocess, sys, time

def main(request):
    with open(os.path.join(request["output_dir"], "pid-namespace"), "w") as handle:
        handle.write(os.readlink("/proc/self/ns/pid"))
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    beats = 0
    while True:
        beats += 1
        with open(os.path.join(request["output_dir"], "beats"), "w") as handle:
            handle.write(str(beats))
        time.sleep(0.05)
"""


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            named = entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes()
            if named and "State:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _in_namespace(namespace: str) -> list[int]:
    """Live processes in the pid namespace ``namespace`` (as ``/proc/<pid>/ns/pid`` names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            inside = entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == namespace
            if inside and "State:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_time_limit_kills_the_entrypoint_and_everything_it_started(tmp_path: Path) -> None:
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", SPAWNING_PY), time_limit_seconds=5)
    started = time.monotonic()

    with pytest.raises(ExecutionError, match=r"^time limit of 5 s exceeded$"):
        execute(request)

    assert time.monotonic() - started < 9
    namespace = (request.output_dir / "outputs" / "pid-namespace").read_text()
    assert namespace != os.readlink("/proc/self/ns/pid")
    while (_processes_naming(str(request.output_dir)) or _in_namespace(namespace)) and time.monotonic() - started < 15:
        time.sleep(0.1)
    assert _processes_naming(str(request.output_dir)) == []
    assert _in_namespace(namespace) == []
    beats = request.output_dir / "outputs" / "beats"
    last = beats.read_text()
    time.sleep(0.3)
    assert beats.read_text() == last


# -- policy --------------------------------------------------------------------------------------


@pytest.fixture
def no_bubblewrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without bwrap on PATH or in the usual places."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sandbox, "LOCATIONS", ())


def test_without_bubblewrap_a_python_run_fails_with_a_one_line_reason(tmp_path: Path, no_bubblewrap: None) -> None:
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY))

    with pytest.raises(ExecutionError) as caught:
        execute(request)

    message = caught.value.detail
    assert "\n" not in message
    assert "bwrap is not installed" in message and "apt-get install bubblewrap" in message
    assert "MLLEDGER_PYTHON_SANDBOX=off" in message and "unsafe" in message
    assert not (request.output_dir / "outputs" / "model.json").exists()


def test_a_bwrap_that_cannot_create_namespaces_is_named_not_run_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --help) echo "usage: bwrap";; --version) echo "bubblewrap 0.8.0";;\n'
        "*) echo 'bwrap: No permissions to create a new namespace' >&2; exit 1;; esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY))

    with pytest.raises(ExecutionError, match=r"cannot create its namespaces here .*No permissions") as caught:
        execute(request)

    assert "\n" not in caught.value.detail and "MLLEDGER_PYTHON_SANDBOX=off" in caught.value.detail


def test_the_operator_may_opt_out_explicitly_and_the_run_records_it(
    tmp_path: Path, no_bubblewrap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_PYTHON_SANDBOX", "off")
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY))

    result = execute(request)

    assert result.details["sandbox"] == {"kind": "none", "reason": "MLLEDGER_PYTHON_SANDBOX=off"}
    seen = json.loads(result.model_file.read_text())
    assert seen["request"]["output_dir"] == str(request.output_dir.resolve() / "outputs")


def test_an_unknown_sandbox_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLEDGER_PYTHON_SANDBOX", "maybe")

    with pytest.raises(ExecutionError, match="MLLEDGER_PYTHON_SANDBOX must be on or off, got 'maybe'"):
        execute(_request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY)))


def test_an_interpreter_folder_that_would_expose_the_data_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_DATA_DIR", str(tmp_path / "project" / "data"))
    monkeypatch.setattr(sandbox, "_python_roots", lambda: [tmp_path / "project"])
    request = _request(tmp_path / "run", _zip(tmp_path / "code.zip", INSIDE_PY))

    with pytest.raises(ExecutionError, match=r"refusing to sandbox the entrypoint: .*project would expose .*data"):
        execute(request)


@pytest.mark.parametrize("network", ["yes", 1, None])
def test_the_spec_network_switch_must_be_a_boolean(network: object) -> None:
    with pytest.raises(InvalidPayload) as caught:
        check_spec("python", {"entrypoint": "train:main", "network": network})

    assert caught.value.field == "spec.network"
