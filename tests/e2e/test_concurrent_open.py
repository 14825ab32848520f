"""Processes that open one PostgreSQL ledger at the same moment all start.

Every process that opens the event store runs the library's ``CREATE ... IF
NOT EXISTS`` statements and ``CREATE OR REPLACE FUNCTION``; PostgreSQL answers
two concurrent replacements of one function with "tuple concurrently updated",
which stopped runners that were started together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.ledger import REPO, drop_schema, make_settings, require_postgres, settings_env

from service.bootstrap import open_services

OPEN_REPEATEDLY = """
from service.bootstrap import open_services
from service.settings import Settings
for _ in range(8):
    open_services(Settings()).close()
print("opened")
"""


@pytest.mark.postgres
def test_processes_opening_one_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    require_postgres()
    settings = make_settings("postgres", tmp_path / "data")
    try:
        open_services(settings, migrate=True).close()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_REPEATEDLY],
                env=settings_env(settings),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(6)
        ]
        outputs = [process.communicate(timeout=240)[0] for process in processes]
        for process, output in zip(processes, outputs, strict=True):
            assert process.returncode == 0, output[-2000:]
            assert output.strip().endswith("opened")
    finally:
        drop_schema(settings.database_schema)
