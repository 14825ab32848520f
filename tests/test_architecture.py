"""The plan of the house, checked on the import graph.

Imports point inward (service -> projections -> domain; the SDK ``mlledger`` sees
only the domain), no module takes part in an import cycle, and the roles inside
``service/`` import each other only along the edges of :data:`PLAN` (README,
"Layout"). Every import counts, also one inside a function or under
``TYPE_CHECKING``: a lazy import is still an edge of the design.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("domain", "projections", "service", "mlledger")
FORBIDDEN = {
    "domain": {"service", "projections", "mlledger"},
    "projections": {"service", "mlledger"},
    "mlledger": {"service", "projections"},
}

# Which roles of service/ a role may import (besides domain and projections).
# The entry points (cli, demo, __main__) and the composition roots (app,
# bootstrap) sit on top; common and settings at the bottom.
_BASE = {"service.common", "service.settings"}
PLAN: dict[str, set[str]] = {
    "service.common": set(),
    "service.settings": set(),
    "service.store": _BASE,
    "service.application": _BASE | {"service.store"},
    "service.bootstrap": _BASE | {"service.store", "service.application"},
    "service.ml": _BASE,
    "service.witness": _BASE,
    "service.ops": _BASE | {"service.store", "service.application", "service.bootstrap"},
    "service.runners": _BASE | {"service.store", "service.application", "service.bootstrap", "service.ml"},
    "service.serving": _BASE | {"service.store", "service.application", "service.bootstrap", "service.ml"},
    "service.exports": _BASE
    | {"service.store", "service.application", "service.bootstrap", "service.ml", "service.ops"},
    "service.api": _BASE
    | {"service.store", "service.application", "service.bootstrap", "service.ml", "service.ops"}
    | {"service.exports", "service.serving"},
    "service.console": _BASE
    | {"service.store", "service.application", "service.bootstrap", "service.ml", "service.ops"}
    | {"service.exports", "service.serving", "service.api"},
    "service.app": _BASE
    | {"service.store", "service.application", "service.bootstrap", "service.ml", "service.ops"}
    | {"service.exports", "service.serving", "service.api", "service.console", "service.runners"},
}
_ENTRY_POINTS = {"service.cli", "service.demo", "service.__main__", "service"}


@cache
def _modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its own name)."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _imported_modules(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports: ``from a.b import c`` is a.b.c when that is a module, else a.b."""
    modules = _modules()
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                source = ".".join([*package, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    found.add(f"{source}.{alias.name}")
                elif source in modules:
                    found.add(source)
    found.discard(name)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports."""
    return {name: frozenset(_imported_modules(name, path)) for name, path in _modules().items()}


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def role(module: str) -> str:
    """``service.serving.predict`` -> ``service.serving``; outside service/, the top package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "service" and len(parts) > 1 else parts[0]


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


def test_no_module_takes_part_in_an_import_cycle() -> None:
    assert import_cycles(dict(import_graph())) == []


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}

    assert import_cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()

    assert "service.ml.network" in graph["service.ml.model_loading"]  # imported inside a function
    assert "service.app" in graph["service.cli"]


def test_serving_never_imports_runners() -> None:
    edges = {
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if role(module) == "service.serving" and role(target) == "service.runners"
    }
    assert edges == set()


def test_every_role_of_service_is_in_the_plan() -> None:
    roles = {role(module) for module in import_graph() if module.startswith("service.")}

    assert roles - _ENTRY_POINTS - set(PLAN) == set()


def test_roles_of_service_import_each_other_only_along_the_plan() -> None:
    outside_plan = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if role(module) in PLAN
        and role(target).startswith("service.")
        and role(target) != role(module)
        and role(target) not in PLAN[role(module)]
    )
    assert outside_plan == []
