"""The code's layout holds as the README describes it: producer and consumer apart, SQL only in the store,
small modules, and no import cycle between irq's own modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from irq.error_codes import ErrorCode
from irq.procs import ROOT

PACKAGES = ("irq", "api", "worker", "inference", "bench")
MAX_LINES = 400
# Benchmarks that time SQL statements themselves (the ORM against Core) or stand in for a bare
# framework's submit path may spell their own; nothing of irq may.
OWN_SQL = {"bench/store_calls.py", "bench/minimal_submit.py", "bench/store.py"}


def modules(packages: tuple[str, ...] = PACKAGES) -> Iterator[tuple[str, Path]]:
    for package in packages:
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


# The codes a string could spell by chance are left out: a single word ("cancelled" is also a job status,
# "expired" an OpenAI batch status, "timeout" a field name) is told from a code only by where it stands.
# A snake_case code's text is the code, wherever it stands.
SPELLED_CODES = {code.value for code in ErrorCode if "_" in code.value}


def test_error_codes_are_named_by_the_enum() -> None:
    """No string literal in irq, the API, the worker or the inference code spells an error code, but in
    the enum's own module (docstrings aside: they quote codes to explain them)."""
    spelled = []
    for name, path in modules(("irq", "api", "worker", "inference")):
        if name == "irq.error_codes":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree) if _has_docstring(node)}
        spelled += [
            f"{name}:{node.lineno} {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in SPELLED_CODES and id(node) not in docstrings
        ]
    assert spelled == []


def _has_docstring(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and bool(node.body)
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    )
