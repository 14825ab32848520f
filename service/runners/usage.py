"""Measure what one execution uses, in the process that executes it.

Runs execute in long-lived worker processes that serve many runs one after
another, so every figure is a difference taken around the run, never a
process total:

- ``cpu_seconds``: user + system time of this process (all its threads) and
  of the children it waited for during the run (``getrusage`` of
  ``RUSAGE_SELF`` and ``RUSAGE_CHILDREN``, after minus before). A child's own
  children count once the child waited for them; a process nobody waits for
  (a daemon left running) is not counted. A sandbox (``bwrap --unshare-pid``)
  reports its exit status before the init of its pid namespace is reaped, so
  that init, with everything the run executed under it, would end up waited
  for by nobody here: during the run this process is a child subreaper
  (``PR_SET_CHILD_SUBREAPER``), adopts such inits and waits for them, briefly,
  at the end, so their time counts too. Only adopted namespace inits are
  waited for here, never a child some other code of this process waits for.
- ``peak_rss_bytes``: this process's resident high-water mark, reset before
  the run (``5`` written to ``/proc/self/clear_refs`` sets ``VmHWM`` back to the
  current size) and read from ``/proc/self/status`` after it, plus the largest
  waited-for child's peak (``ru_maxrss`` of ``RUSAGE_CHILDREN``) when that rose
  during the run. The kernel keeps only the largest child's peak for the
  process's whole life, so a run whose children stay below an earlier run's
  largest child adds nothing for them; and the process and its child need not
  peak at the same moment, so the sum is an upper bound of the tree's peak.
  Where the high-water mark cannot be reset (not Linux, or ``clear_refs`` not
  writable) the process's lifetime peak stands in, an over-estimate.
- ``wall_seconds``: monotonic time from start to end.
- ``gpu_seconds`` and ``peak_gpu_memory_bytes``, only when the run's device is
  ``cuda``: the wall time (the device is held for the whole run) and
  ``torch.cuda.max_memory_allocated`` (reset before the run) when CUDA was
  used by PyTorch in this process. Memory a child process allocates on the
  GPU (the python kind's entrypoint) is not visible here and is left out.
- ``host`` (this machine's name) and ``backend`` (``local``, ``ray``, ...).
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_HIGH_WATER_MARK = "5"
# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
ORPHAN_GRACE_SECONDS = 2.0
"""How long the end of a run waits for an adopted sandbox init to exit (it is killed with its sandbox at once)."""


@dataclass
class Usage:
    """What a measured execution used; ``resources`` is filled in when the measurement ends."""

    resources: dict[str, Any] = field(default_factory=dict)


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def reset_peak_rss() -> bool:
    """Set this process's resident high-water mark back to its current size; False where that is not possible."""
    try:
        CLEAR_REFS.write_text(RESET_HIGH_WATER_MARK)
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's resident high-water mark (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    with suppress(OSError):
        found = re.search(r"^VmHWM:\s+(\d+)\s+kB", STATUS.read_text(), re.MULTILINE)
        if found:
            return int(found.group(1)) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * MAXRSS_UNIT


def _prctl(option: int, value: int) -> int | None:
    """``prctl(option, value)``'s answer, or None where there is no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if option == PR_GET_CHILD_SUBREAPER:
            flag = ctypes.c_int(0)
            return None if libc.prctl(option, ctypes.byref(flag), 0, 0, 0) != 0 else flag.value
        return None if libc.prctl(option, value, 0, 0, 0) != 0 else 0
    except (OSError, AttributeError):
        return None


def adopt_orphans() -> bool | None:
    """Make this process a child subreaper; whether it was one already (None where that is not possible)."""
    previous = _prctl(PR_GET_CHILD_SUBREAPER, 0)
    if previous is None or _prctl(PR_SET_CHILD_SUBREAPER, 1) is None:
        return None
    return bool(previous)


def children() -> set[int]:
    """This process's children, by pid (every thread's)."""
    found: set[int] = set()
    with suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError):
                found.update(int(pid) for pid in Path(f"/proc/self/task/{task}/children").read_text().split())
    return found


def _namespace_init(pid: int) -> bool:
    """True for the init of a nested pid namespace (its innermost pid is 1), such as a sandbox's."""
    with suppress(OSError):
        found = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
        if found:
            pids = found.group(1).split()
            return len(pids) > 1 and pids[-1] == "1"
    return False


def reap_adopted(known: set[int], grace: float = ORPHAN_GRACE_SECONDS) -> None:
    """Wait (up to ``grace`` seconds) for the namespace inits adopted since ``known`` was listed."""
    pending = {pid for pid in children() - known if _namespace_init(pid)}
    deadline = time.monotonic() + grace
    while pending:
        for pid in sorted(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.discard(pid)
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _torch_cuda() -> Any:
    """``torch.cuda`` when PyTorch is already imported here and has initialised CUDA, else None.

    Nothing is imported or initialised for the measurement: a worker that never
    touched CUDA must not create a CUDA context (nor pay for importing torch).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    with suppress(Exception):
        if torch.cuda.is_initialized():
            return torch.cuda
    return None


@dataclass(frozen=True)
class _Start:
    """The readings taken before the run."""

    wall: float
    self_usage: resource.struct_rusage
    children_usage: resource.struct_rusage
    children: set[int]
    was_subreaper: bool | None

    @classmethod
    def now(cls, device: str) -> _Start:
        if device == "cuda" and (cuda := _torch_cuda()) is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
        was_subreaper = adopt_orphans()
        known = children()
        reset_peak_rss()
        return cls(
            wall=time.monotonic(),
            self_usage=resource.getrusage(resource.RUSAGE_SELF),
            children_usage=resource.getrusage(resource.RUSAGE_CHILDREN),
            children=known,
            was_subreaper=was_subreaper,
        )

    def end(self) -> None:
        """Wait for the sandbox inits adopted during the run; stop adopting unless this process did before."""
        if self.was_subreaper is None:
            return
        reap_adopted(self.children)
        if not self.was_subreaper:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


def _resources(start: _Start, device: str, backend: str) -> dict[str, Any]:
    """The figures since ``start`` (see the module's description of each)."""
    cuda = _torch_cuda() if device == "cuda" else None
    if cuda is not None:
        cuda.synchronize()
    wall = max(0.0, time.monotonic() - start.wall)
    start.end()
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    children_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = _cpu_seconds(self_usage) - _cpu_seconds(start.self_usage)
    cpu += _cpu_seconds(children_usage) - _cpu_seconds(start.children_usage)
    children_peak = 0
    if children_usage.ru_maxrss > start.children_usage.ru_maxrss:
        children_peak = int(children_usage.ru_maxrss) * MAXRSS_UNIT
    resources: dict[str, Any] = {
        "cpu_seconds": round(max(0.0, cpu), 6),
        "peak_rss_bytes": peak_rss_bytes() + children_peak,
        "wall_seconds": round(wall, 6),
        "host": socket.gethostname()[:200] or "unknown",
        "backend": backend,
    }
    if device == "cuda":
        resources["gpu_seconds"] = resources["wall_seconds"]
        if cuda is not None:
            resources["peak_gpu_memory_bytes"] = int(cuda.max_memory_allocated())
    return resources


@contextmanager
def measured(device: str, backend: str = "local") -> Iterator[Usage]:
    """Measure the block as one execution on ``device`` (``cpu`` or ``cuda``) of ``backend``.

    The yielded :class:`Usage` holds the resources once the block has ended,
    however it ended.
    """
    usage = Usage()
    start = _Start.now(device)
    try:
        yield usage
    finally:
        usage.resources = _resources(start, device, backend)


__all__ = ["Usage", "adopt_orphans", "children", "measured", "peak_rss_bytes", "reap_adopted", "reset_peak_rss"]
