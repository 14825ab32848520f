"""A real single-node Ray cluster on loopback, for tests of the Ray execution backend.

The head runs as ``ray start --head --block`` in its own session, bound to
127.0.0.1 on free ports, with its own temp dir, 4 logical CPUs, a small object
store and token authentication on (a fresh token per cluster, passed to the
head as ``RAY_AUTH_TOKEN``). Stopping it ends exactly the processes it started
(the whole process tree of that ``ray start``), never other Ray clusters on the
machine, so ``ray stop`` is not used. The cluster can be stopped and started
again on the same ports, for tests of a cluster that goes away mid-way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
START_TIMEOUT = 120.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (as /proc shows them now)."""
    children = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class RayCluster:
    """One Ray head on loopback: its dashboard (Jobs API) address and auth token."""

    root: Path
    num_cpus: int = 4
    num_gpus: int = 0
    """GPUs the head offers its jobs (0 in the suite; a device check gives it the machine's)."""
    hidden: tuple[Path, ...] = ()
    """Folders the cluster's processes (and so every job) do not see: the head starts in a mount
    namespace of its own where each is an empty tmpfs (bubblewrap), as nodes without the ledger's volume."""
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    ports: dict[str, int] = field(default_factory=dict)
    worker_ports: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _sessions: set[int] = field(default_factory=set, repr=False)

    @property
    def address(self) -> str:
        """The Jobs API address (the dashboard's HTTP URL)."""
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of a process that talks to this cluster with its token."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def log(self) -> Path:
        """Where ``ray start`` writes its own output."""
        return self.root / "ray-start.log"

    def start(self) -> RayCluster:
        """Start the head (on the ports it had before, if it ran already); wait until the Jobs API answers."""
        if not self.ports:
            names = ["gcs", "dashboard", "agent_listen", "agent_grpc", "metrics", "node_manager", "object_manager"]
            names += ["runtime_env_agent", "client_server"]
            allocated = free_ports(len(names) + 24)
            self.ports = dict(zip(names, allocated, strict=False))
            self.worker_ports = allocated[len(names) :]
        temp_dir = self.root / "ray"
        temp_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.ports['gcs']}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.ports['dashboard']}",
            f"--dashboard-agent-listen-port={self.ports['agent_listen']}",
            f"--dashboard-agent-grpc-port={self.ports['agent_grpc']}",
            f"--metrics-export-port={self.ports['metrics']}",
            f"--node-manager-port={self.ports['node_manager']}",
            f"--object-manager-port={self.ports['object_manager']}",
            f"--runtime-env-agent-port={self.ports['runtime_env_agent']}",
            f"--ray-client-server-port={self.ports['client_server']}",
            f"--worker-port-list={','.join(map(str, self.worker_ports))}",
            f"--num-cpus={self.num_cpus}",
            f"--num-gpus={self.num_gpus}",
            f"--object-store-memory={80 * 1024 * 1024}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--include-log-monitor=false",
        ]
        if self.hidden:
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                raise RuntimeError("hiding folders from the cluster needs bubblewrap (bwrap)")
            hide = [arg for folder in self.hidden for arg in ("--tmpfs", str(folder.resolve()))]
            args = [bwrap, "--dev-bind", "/", "/", *hide, "--", *args]
        env = {
            **os.environ,
            **self.env,
            "RAY_USAGE_STATS_ENABLED": "0",
            # A single-node cluster: Ray then keeps 127.0.0.1 as the node's address instead of
            # replacing it with the machine's external one (which every server would bind to).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_enable_metrics_collection": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        """Wait until the Jobs API lists jobs with the token (and the node has registered)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with status {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.address}/api/jobs/", headers=headers, timeout=5)
                if answer.status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Ray head did not answer within {START_TIMEOUT:g} s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        """The last lines ``ray start`` printed."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        """Whether the head is up."""
        return self.process is not None and self.process.poll() is None

    def _pids(self) -> set[int]:
        """Every live process of this cluster.

        ``ray start`` leads a session of its own, and jobs' entrypoints start sessions of their
        own below it: every process of those sessions belongs to this cluster, orphaned ones too.
        """
        assert self.process is not None
        sessions = set(self._sessions) | {self.process.pid}
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                sessions.add(os.getsid(pid))
        sessions.discard(os.getsid(0))
        self._sessions = sessions
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry.name)) in sessions and _alive(int(entry.name)):
                        pids.add(int(entry.name))
        pids.discard(os.getpid())
        return pids

    def stop(self, grace: float = 15.0, *, hard: bool = False) -> None:
        """Stop every process of this cluster.

        Gently (``ray start`` is asked with SIGTERM and stops its processes), then with SIGKILL for
        whatever is left after ``grace`` seconds; ``hard`` SIGKILLs everything at once, as a crash would.
        """
        if self.process is None:
            return
        pids = self._pids()
        if not hard:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
                time.sleep(0.2)
        for _ in range(5):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None
        self._sessions = set()

    def restart(self) -> RayCluster:
        """Stop the cluster and start a fresh one on the same ports (its jobs are gone)."""
        self.stop()
        return self.start()


def start_cluster(num_cpus: int = 4, hidden: tuple[Path, ...] = (), num_gpus: int = 0) -> RayCluster:
    """A started cluster in a fresh temp dir of its own (short path: Ray's sockets live there)."""
    root = Path(tempfile.mkdtemp(prefix="mlray-", dir="/tmp"))
    root.chmod(0o700)
    cluster = RayCluster(root, num_cpus=num_cpus, num_gpus=num_gpus, hidden=hidden)
    try:
        return cluster.start()
    except BaseException:
        remove_cluster(cluster)
        raise


def remove_cluster(cluster: RayCluster) -> None:
    """Stop the cluster and remove its temp dir."""
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
