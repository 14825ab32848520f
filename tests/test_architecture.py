"""Imports point inward: service -> projections -> domain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {"domain": {"service", "projections"}, "projections": {"service"}}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_inward(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_domain_does_no_io() -> None:
    io_modules = {"sqlalchemy", "psycopg", "sqlite3", "fastapi", "httpx", "requests", "socket", "subprocess"}
    used = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) & io_modules)
        for path in (REPO / "domain").rglob("*.py")
    }
    assert {k: v for k, v in used.items() if v} == {}
