"""``mlledger demo`` runs a whole governed lifecycle on a fresh embedded ledger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.ledger import REPO


def test_demo_trains_approves_deploys_and_prints_lineage(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MLLEDGER_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-m", "service", "demo"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "signed an approval" in result.stdout
    assert "as champion" in result.stdout
    assert "lineage of breast-cancer-" in result.stdout
    assert result.stdout.count("approve by ") == 2
    assert "deployment: champion v1" in result.stdout
    assert "gbm run succeeded on cpu" in result.stdout and "mlp run succeeded on cpu" in result.stdout
    assert "reproduced the gbm run: verified" in result.stdout
    assert "explanations (tree explainer" in result.stdout
    assert "fairness by clinic: selection rate A:" in result.stdout
    assert "served 1000 signed predictions" in result.stdout
    assert "top reasons:" in result.stdout and " contributes " in result.stdout
    assert "drift alert recorded at position" in result.stdout
    assert "exported " in result.stdout and ".zip" in result.stdout
    assert "Traceback" not in result.stderr
    verify = subprocess.run(
        [sys.executable, "-m", "service", "verify"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
