"""Run the python kind's entrypoint inside an operating-system sandbox (bubblewrap).

The entrypoint is arbitrary code from a registered code version. Without
isolation it could read everything the runner can: the ledger key and the
subject key-encryption key under the data directory, the database URL and API
keys in the runner's environment, the work folders of other runs, and the
network (the database, the API, anything on the internet).

:func:`prepare` wraps the interpreter's command line in Debian's ``bwrap`` with:

- new user, pid, ipc, uts, cgroup and mount namespaces, and a new network
  namespace (only a loopback interface) unless the spec says ``network: true``;
  uid and gid 65534 inside, no capabilities, no new privileges, no nested user
  namespaces, its own session (no terminal injection), killed when the executor
  that started it dies;
- an empty root file system that holds, read-only: the system directories
  (``/usr`` and the ``/bin``, ``/lib*`` links), a few named files of ``/etc``
  (the loader cache, time zone, name resolution, CA certificates; never the
  host's ``/etc/passwd``, ``/etc/shadow`` or ``/etc/ssl/private``: its
  ``passwd`` and ``group`` know only root and nobody), the Python base
  prefix, the virtual environment's ``pyvenv.cfg`` and ``site-packages``, and
  this run's dataset files; read-write: this run's code folder, its output
  folder and its control folder (request and answer); private ``/tmp`` and
  ``/dev/shm``; a ``/proc`` of its own pid namespace and a minimal ``/dev``
  (plus the NVIDIA device nodes and a read-only ``/sys`` when the run's device
  is ``cuda``);
- a cleared environment: only what the caller passes (the python kind's
  allow-list), with ``HOME`` and ``TMPDIR`` set to ``/tmp``.

Inside, the run's folders appear at fixed paths under ``/sandbox`` (see
:class:`Folders`), so the entrypoint sees the same paths on every runner.

When ``bwrap`` is missing or cannot create its namespaces, the python kind
refuses to run (:class:`ExecutionError` with a one-line reason) unless the
operator opted out with ``MLLEDGER_PYTHON_SANDBOX=off``, which is unsafe. The
variable is read from the environment of the process that executes the run (a
local runner's workers inherit the runner's; a Ray job's executor is given no
``MLLEDGER_`` variables, so there the sandbox is always required).

Once bwrap has exited, :meth:`Prepared.wait_ended` waits for the last process
of the sandbox (what the entrypoint left running dies with the init of its pid
namespace, a moment after bwrap), and then :func:`scrub` must run over every
read-write folder before the executor reads anything in them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.runners.contract import ExecutionError

SETTING = "MLLEDGER_PYTHON_SANDBOX"
SANDBOX_UID = SANDBOX_GID = 65534
INSIDE = Path("/sandbox")
INSIDE_PATH = "/usr/local/bin:/usr/bin:/bin"
INSIDE_TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, not a folder on the runner
INSIDE_SHM = "/dev/shm"  # noqa: S108 - likewise
LOCATIONS = ("/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap")
END_TIMEOUT_SECONDS = 10.0
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "gai.conf",
    "resolv.conf",
    "protocols",
    "services",
    "mime.types",
    "os-release",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
)
USERS = "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n"
GROUPS = "root:x:0:\nnogroup:x:65534:\n"
HINT = (
    "install bubblewrap (apt-get install bubblewrap) where user namespaces are allowed, "
    f"or set {SETTING}=off to run python pipelines unsandboxed (unsafe: their code can then read "
    "the runner's keys, credentials and other runs' files)"
)


@dataclass(frozen=True)
class Folders:
    """One run's folders: on the runner's disk, or as the entrypoint sees them."""

    code: Path
    output: Path
    control: Path
    datasets: tuple[Path, ...] = ()


@dataclass
class Prepared:
    """How to start the entrypoint: the command-line prefix, environment and descriptors for Popen, the paths it sees.

    Use it as a context manager around the run: it holds the read end of
    bwrap's ``--info-fd`` pipe, which names the init of the sandbox's pid
    namespace so that :meth:`wait_ended` can wait for the sandbox's last process.
    """

    prefix: list[str]
    environment: dict[str, str]
    inside: Folders
    sandboxed: bool
    description: dict[str, Any] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()
    info: int | None = None

    def __enter__(self) -> Prepared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, arguments: list[str]) -> list[str]:
        """The command line running the interpreter with ``arguments`` (written for :attr:`inside`)."""
        return [*self.prefix, *arguments]

    def launched(self) -> None:
        """Close this process's copy of the descriptors handed to bwrap (call right after starting it)."""
        for fd in self.pass_fds:
            os.close(fd)
        self.pass_fds = ()

    def close(self) -> None:
        """Close every descriptor still held."""
        self.launched()
        if self.info is not None:
            os.close(self.info)
            self.info = None

    def signal_of(self, returncode: int) -> int | None:
        """The signal that ended the entrypoint, if one did (bwrap's init reports it as 128 + N)."""
        if returncode < 0:
            return -returncode
        if self.sandboxed and returncode > 128:
            return returncode - 128
        return None

    def wait_ended(self, timeout: float = END_TIMEOUT_SECONDS) -> bool:
        """After bwrap exited: wait until no process of the sandbox is left; False if some outlived ``timeout``.

        bwrap exits as soon as the entrypoint's process does, while the init of
        its pid namespace, and whatever the entrypoint left running under it,
        may live a moment longer (the init is killed with bwrap, and the kernel
        kills the rest of the namespace with its init). Until they are gone they
        can still write into the run's folders, so nothing reads those before.
        """
        if self.info is None:
            return True
        try:
            written = os.read(self.info, 65536).decode("utf-8", errors="replace")
            info, _ = json.JSONDecoder().raw_decode(written)
            pid, namespace = int(info["child-pid"]), int(info["pid-namespace"])
        except (BlockingIOError, ValueError, KeyError, TypeError):
            return True  # bwrap never started a sandbox
        with contextlib.suppress(PermissionError):
            try:
                if os.stat(f"/proc/{pid}/ns/pid").st_ino != namespace:
                    return True  # that init is gone and its pid names another process
            except (FileNotFoundError, ProcessLookupError):
                return True
        deadline = time.monotonic() + timeout
        while _running(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has, and its pid namespace is empty)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def required() -> bool:
    """Whether python pipelines must run sandboxed (``MLLEDGER_PYTHON_SANDBOX``: ``on``, the default, or ``off``)."""
    value = os.environ.get(SETTING, "on")
    if value == "on":
        return True
    if value == "off":
        return False
    raise ExecutionError(f"{SETTING} must be on or off, got {value!r}")


_BUBBLEWRAP: dict[str, tuple[str, bool]] = {}


def bubblewrap() -> tuple[str, str, bool]:
    """(path, version, supports --disable-userns) of a bwrap that works here; raise ExecutionError when none does.

    The probe starts one empty sandbox with the namespaces a run uses; a success
    is remembered for the life of the process, a failure is not.
    """
    found = shutil.which("bwrap") or next((p for p in LOCATIONS if os.access(p, os.X_OK)), None)
    if found is None:
        raise ExecutionError(
            f"the python kind runs user code in a bubblewrap sandbox, but bwrap is not installed; {HINT}"
        )
    if found not in _BUBBLEWRAP:
        try:
            helped = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=30)
            versioned = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
            empty = ["--ro-bind", "/", "/", "--proc", "/proc", "--", sys.executable, "-S", "-c", ""]
            probe = subprocess.run(
                [found, *_namespaces(network=False, disable_userns=False), *empty],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExecutionError(f"the python kind's sandbox (bwrap) could not be started: {exc}; {HINT}") from None
        if probe.returncode != 0:
            said = " ".join((probe.stderr or probe.stdout or f"exit status {probe.returncode}").split())[:300]
            raise ExecutionError(
                f"the python kind's sandbox (bwrap) cannot create its namespaces here ({said}); {HINT}"
            )
        version = versioned.stdout.strip().rpartition(" ")[2] or "unknown"
        _BUBBLEWRAP[found] = (version, "--disable-userns" in helped.stdout)
    version, disable_userns = _BUBBLEWRAP[found]
    return found, version, disable_userns


def _namespaces(network: bool, disable_userns: bool) -> list[str]:
    args = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        args.append("--unshare-net")
    if disable_userns:
        args.append("--disable-userns")
    args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL", "--hostname", "sandbox"]
    return [*args, "--die-with-parent", "--new-session"]


def inside_folders(host: Folders) -> Folders:
    """Where ``host``'s folders appear inside the sandbox: fixed paths under /sandbox."""
    return Folders(
        code=INSIDE / "code",
        output=INSIDE / "output",
        control=INSIDE / "control",
        datasets=tuple(INSIDE / "datasets" / str(i) / p.name for i, p in enumerate(host.datasets)),
    )


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _python_roots() -> list[Path]:
    """Directories the interpreter needs: its base prefix and every site-packages folder it uses."""
    roots = [_real(sys.base_prefix), _real(sys.base_exec_prefix)]
    sites = [*site.getsitepackages()]
    sites += [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    roots += [_real(p) for p in sites if os.path.isdir(p)]
    return roots


def _private_paths(host: Folders) -> list[Path]:
    """What no read-only system bind may contain: this run's folders (so every run's), datasets, the data directory."""
    private = [_real(p) for p in (host.code, host.output, host.control, *host.datasets)]
    private.append(_real(os.environ.get("MLLEDGER_DATA_DIR") or "data"))
    if os.environ.get("MLLEDGER_KEY_PATH"):
        private.append(_real(os.environ["MLLEDGER_KEY_PATH"]))
    return private


def _outermost(paths: Iterable[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(_within(path, root) for root in kept):
            kept.append(path)
    return kept


def _write_identity(control: Path) -> tuple[Path, Path]:
    identity = control / "identity"
    identity.mkdir(exist_ok=True)
    passwd, group = identity / "passwd", identity / "group"
    passwd.write_text(USERS, encoding="utf-8")
    group.write_text(GROUPS, encoding="utf-8")
    return passwd, group


def _filesystem(host: Folders, inside: Folders, device: str) -> tuple[list[str], Path]:
    """bwrap arguments building the sandbox's file system; and the interpreter path to run inside it."""
    args: list[str] = []
    roots: list[Path] = [Path("/usr")]
    for name in SYSTEM_LINKS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            roots.append(_real(name))
    roots = _outermost([*roots, *_python_roots()])
    for path in _private_paths(host):
        exposing = next((root for root in roots if _within(path, root)), None)
        if exposing is not None:
            raise ExecutionError(
                f"refusing to sandbox the entrypoint: the interpreter folder {exposing} would expose {path}"
            )
    # The private /tmp, /dev/shm, /proc and /dev first: an interpreter or virtual environment that lives
    # under /tmp (a checkout there) is then bound on top of the tmpfs instead of being hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", INSIDE_TMP, "--tmpfs", INSIDE_SHM]
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    venv_config = _real(sys.prefix) / "pyvenv.cfg"
    if sys.prefix != sys.base_prefix and venv_config.is_file() and not any(_within(venv_config, r) for r in roots):
        args += ["--ro-bind", str(venv_config), str(venv_config)]
    launcher = _real(os.path.dirname(sys.executable)) / os.path.basename(sys.executable)
    interpreter = _real(sys.executable)
    if not any(_within(interpreter, r) for r in roots):
        args += ["--ro-bind", str(interpreter), str(interpreter)]
    if launcher != interpreter and not any(_within(launcher, r) for r in roots):
        args += ["--symlink", str(interpreter), str(launcher)]
    for name in ETC:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind-try", str(path), str(path)]
    passwd, group = _write_identity(host.control)
    args += ["--ro-bind", str(passwd), "/etc/passwd", "--ro-bind", str(group), "/etc/group"]
    if device == "cuda":
        for node in sorted(glob.glob("/dev/nvidia*")):
            args += ["--dev-bind-try", node, node]
        args += ["--ro-bind-try", "/sys", "/sys"]
    for source, target in ((host.code, inside.code), (host.output, inside.output), (host.control, inside.control)):
        args += ["--bind", str(_real(source)), str(target)]
    for source, target in zip(host.datasets, inside.datasets, strict=True):
        args += ["--ro-bind", str(_real(source)), str(target)]
    args += ["--remount-ro", "/", "--chdir", str(inside.code)]
    return args, launcher


def prepare(
    host: Folders,
    environment: dict[str, str],
    *,
    network: bool = False,
    device: str = "cpu",
) -> Prepared:
    """How to run the interpreter on ``host``'s folders: in the sandbox, or plainly when it is switched off.

    ``environment`` is everything the entrypoint may see (the caller's
    allow-list); inside the sandbox ``PATH``, ``HOME`` and ``TMPDIR`` are
    replaced by the sandbox's own. Raises :class:`ExecutionError` when the
    sandbox is required but unavailable.
    """
    if not required():
        return Prepared(
            [sys.executable],
            environment,
            host,
            sandboxed=False,
            description={"kind": "none", "reason": f"{SETTING}=off"},
        )
    bwrap, version, disable_userns = bubblewrap()
    inside = inside_folders(host)
    filesystem, launcher = _filesystem(host, inside, device)
    passed = dict(environment) | {"PATH": INSIDE_PATH, "HOME": INSIDE_TMP, "TMPDIR": INSIDE_TMP}
    setenv = [arg for key, value in sorted(passed.items()) for arg in ("--setenv", key, value)]
    info_read, info_write = os.pipe()
    os.set_blocking(info_read, False)
    prefix = [bwrap, *_namespaces(network, disable_userns), "--info-fd", str(info_write), *filesystem]
    return Prepared(
        [*prefix, "--clearenv", *setenv, "--", str(launcher)],
        passed,
        inside,
        sandboxed=True,
        description={
            "kind": "bubblewrap",
            "version": version,
            "network": network,
            "uid": SANDBOX_UID,
            "nested_user_namespaces": not disable_userns,
        },
        pass_fds=(info_write,),
        info=info_read,
    )


def _refuse(error: OSError) -> None:
    raise ExecutionError(f"cannot check the entrypoint's outputs: {error}")


def scrub(folder: Path) -> int:
    """Make a folder the entrypoint could write safe to read: remove links and special files, clear set-id bits.

    A sandboxed entrypoint can leave a symbolic link named ``model.pkl`` that
    points at the ledger key (the target need not exist inside the sandbox), a
    FIFO that blocks whoever opens it, or a set-user-id program; the executor
    and the runner read these folders with the runner's privileges. Returns the
    number of entries removed.
    """
    removed = 0
    if folder.is_symlink() or not folder.is_dir():
        return 0
    os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) & ~(stat.S_ISUID | stat.S_ISGID) | stat.S_IRWXU)
    for directory, subdirectories, files in os.walk(folder, onerror=_refuse):
        for name in [*subdirectories, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID) | stat.S_IRWXU)
            elif stat.S_ISREG(info.st_mode):
                if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
            else:
                os.unlink(path)
                removed += 1
        subdirectories[:] = [d for d in subdirectories if os.path.isdir(os.path.join(directory, d))]
    return removed
