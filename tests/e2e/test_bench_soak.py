"""``bench/soak.py`` at its smallest: 24 seconds of mixed load with one fault of each kind, and its checks.

The real soak runs for half an hour (``bench/results/``); this keeps the harness
from rotting: the topology starts, every fault is injected, and the report's
checks (acknowledged writes, rebuilds, verify) pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.ledger import PG_URL, REPO, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_short_soak_survives_one_fault_of_each_kind_and_loses_no_acknowledged_write(tmp_path: Path) -> None:
    require_postgres()
    report = tmp_path / "soak.txt"

    done = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--minutes",
            "0.4",
            "--fault-every",
            "4",
            "--sample-every",
            "2",
            "--rows",
            "600",
            "--predict-rate",
            "10",
            "--blob-disk-mib",
            "64",
            "--database-url",
            PG_URL,
            "--report",
            str(report),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert "verdict: PASS" in text
    injected = next(line for line in text.splitlines() if line.strip().startswith("injected:"))
    for kind in ("kill_api_worker", "kill_projector", "kill_runner", "terminate_db_connections"):
        assert f"{kind} x0" not in injected, injected
    if os.geteuid() == 0:
        assert "blob_disk_full x0" not in injected and "blob disk freed" in text
    assert "missing from the ledger: 0" in text
    assert "DIFFERENT" not in text and "mlledger verify: exit 0" in text
