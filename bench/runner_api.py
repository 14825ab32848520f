"""Runners outside the service, for benchmarks: the test suite's helpers (``tests/support/runner_http.py``)
with a benchmark's defaults.

Runners hold no ledger key and no database credentials: they reach the ledger
only through its API, as a principal with the ``runner`` role.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support/runner_http.py

from support import runner_http
from support.runner_http import RunnerPrincipal, free_port

from service.bootstrap import Services

__all__ = ["RunnerPrincipal", "free_port", "ledger_api", "runner_env", "runner_principal"]


def runner_principal(services: Services, name: str = "bench-runner") -> RunnerPrincipal:
    """A service account with the runner role and a fresh API key of it."""
    return runner_http.runner_principal(services, name)


@contextmanager
def ledger_api(services: Services, log: Path, workers: int = 1) -> Iterator[str]:
    """``mlledger serve --no-projector --no-runner --workers N`` on a free loopback port; yields its URL."""
    with runner_http.ledger_api(services, log, "--no-projector", "--workers", str(workers)) as url:
        yield url


def runner_env(url: str, principal: RunnerPrincipal, key_file: Path) -> dict[str, str]:
    """A runner's whole environment (the ledger's URL, its API key and key file), default heartbeats."""
    return runner_http.runner_env(url, principal, key_file, quick_heartbeats=False)
