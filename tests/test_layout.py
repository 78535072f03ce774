"""The code's layout holds as the README describes it: producer and consumer apart, SQL only in the store,
small modules, no import cycle between irq's own modules, and the tests' helpers apart from their fixtures."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from irq.procs import ROOT

PACKAGES = ("irq", "api", "worker", "inference", "bench")
MAX_LINES = 400
# Benchmarks that time SQL statements themselves (the ORM against Core) or stand in for a bare
# framework's submit path may spell their own; nothing of irq may.
OWN_SQL = {"bench/store_calls.py", "bench/minimal_submit.py", "bench/store.py"}


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            yield name, path


def imported(path: Path) -> set[str]:
    """Modules imported at module level (imports inside functions are deferred on purpose)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_api_imports_nothing_from_the_worker() -> None:
    offenders = [name for name, path in modules() if name.startswith("api") and any(
        n == "worker" or n.startswith("worker.") for n in imported(path)
    )]  # fmt: skip
    assert offenders == []


def test_sql_lives_in_the_store() -> None:
    offenders = []
    for name, path in modules():
        relative = str(path.relative_to(ROOT))
        if relative.startswith("irq/store/") or relative in OWN_SQL:
            continue
        uses = {n for n in imported(path) if n.startswith("sqlalchemy")}
        if uses - {"sqlalchemy.exc"} - {n for n in uses if n.startswith("sqlalchemy.exc.")}:
            offenders.append(name)
    assert offenders == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_cycle() -> None:
    known = dict(modules())
    graph = {name: {n for n in imported(path) if n in known and n != name} for name, path in known.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_tests_import_helpers_from_the_support_modules_never_from_a_conftest() -> None:
    """A conftest holds fixtures, which pytest hands out; what a test imports lives in a support module."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = [getattr(node, "module", None) or "", *(alias.name for alias in node.names)]
            if any(name.split(".")[-1] == "conftest" for name in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
