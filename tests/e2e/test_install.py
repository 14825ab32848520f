"""A plain ``pip install`` of the project, without extras, gives a working SDK and command line.

The development virtualenv holds the ``dev`` extra, so an import that only the
extra satisfies (``httpx`` for the SDK once was) passes every other test. Here
the project is installed, non-editable, into a fresh virtualenv with the pins of
constraints.txt, from the package indexes pip is configured with (and its
cache), and then used from outside the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ledger import REPO

pytestmark = pytest.mark.slow

NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "data",
    "tests",
    "bench",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
    "test-artifacts",
)
"""What a source distribution would not carry (as .gitignore lists, plus the tests and benchmarks)."""


@dataclass(frozen=True)
class Installed:
    """A fresh virtualenv holding the project, and a directory outside the source tree to run it in."""

    bin: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    # Built from a copy, so the build leaves no build/ or *.egg-info in the checkout.
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLLEDGER_", "PYTHON", "VIRTUAL_ENV"))}
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    bin_ = root / "venv" / "bin"
    pip = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "install", "--quiet", "-c", str(source / "constraints.txt"), str(source)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    workdir = root / "elsewhere"
    workdir.mkdir()
    return Installed(bin_, workdir, env)


def test_the_sdk_imports_without_extras(installed: Installed) -> None:
    result = installed.run(
        "python", "-c", "import mlledger; from mlledger import LedgerClient; print(mlledger.__file__)"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(installed.bin.parent)), "imported from outside the virtualenv"


def test_the_command_line_runs_without_extras(installed: Installed) -> None:
    result = installed.run("mlledger", "--help")

    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout and "verify" in result.stdout


def test_every_module_of_the_installed_packages_imports(installed: Installed) -> None:
    """Each undeclared runtime dependency (as scipy was) fails here, not on a user's first drift check.

    (The migrations are alembic scripts, run by ``mlledger migrate`` and not importable on their own.)
    """
    script = (
        "import importlib, pkgutil\n"
        "for top in ('domain', 'projections', 'service', 'mlledger'):\n"
        "    package = importlib.import_module(top)\n"
        "    for module in pkgutil.walk_packages(package.__path__, top + '.'):\n"
        "        if not module.name.endswith('__main__'):\n"
        "            importlib.import_module(module.name)\n"
    )

    result = installed.run("python", "-c", script)

    assert result.returncode == 0, result.stderr[-3000:]
