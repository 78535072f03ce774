"""The code's layout holds as docs/internals.md describes it: the domain (`irq/`) imports nothing above it,
the services nothing of the shell or the benchmarks, producer and consumer apart, SQL only in the store,
small modules, error codes named by their enum, no import cycle between irq's own modules, and the tests'
helpers apart from their fixtures."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

from irq.error_codes import ErrorCode
from tests import ROOT

PACKAGES = ("irq", "api", "worker", "inference", "bench", "cli")
SERVICES = ("api", "worker", "inference")
ABOVE_THE_SERVICES = ("bench", "cli")  # the benchmarks, and the shell: the `irq` command, `irq dev`'s stack
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


def imported(path: Path, deferred: bool = False) -> set[str]:
    """Modules imported at module level (imports inside functions are deferred on purpose), or with
    `deferred` anywhere in the module, inside functions too."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree) if deferred else tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_from(path: Path, packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` that the module at `path` imports, at any level."""
    return sorted(n for n in imported(path, deferred=True) if n.split(".")[0] in packages)


def imports_across(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules of the `importers` packages that import from the `forbidden` ones, and what they import."""
    ours = ((name, path) for name, path in modules() if name.split(".")[0] in importers)
    found = {name: imports_from(path, forbidden) for name, path in ours}
    return {name: names for name, names in found.items() if names}


def test_an_import_inside_a_function_counts() -> None:
    # `irq worker` imports the worker only when it runs: the rules below see such imports too.
    assert "worker.main" in imports_from(ROOT / "cli" / "app.py", SERVICES)
    assert imports_across(("cli",), SERVICES)


def test_the_domain_imports_nothing_above_it() -> None:
    assert imports_across(("irq",), (*SERVICES, *ABOVE_THE_SERVICES)) == {}


def test_the_services_import_neither_the_shell_nor_the_benchmarks() -> None:
    assert imports_across(SERVICES, ABOVE_THE_SERVICES) == {}


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


# Where a code is spelled, two rules find it. A snake_case code is found wherever it stands: its text is
# the code. A single word ("cancelled" is also a job status, "expired" an OpenAI batch status, "timeout" a
# field name) is found only where a code goes: a `code=` or `error_code=` argument or assignment, a
# comparison with a `.code` or `.error_code`, the code argument of `ApiError(status, code, …)`.
CODES = {code.value for code in ErrorCode}
SPELLED_CODES = {code for code in CODES if "_" in code}
CODE_NAMES = {"code", "error_code"}
CODE_ARGUMENT = {"ApiError": 1, "respond": 2, "SchemaProblem": 0, "ServiceError": 1}


def test_error_codes_are_named_by_the_enum() -> None:
    """No string literal in irq, the API, the worker or the inference code spells an error code, but in
    the enum's own module (docstrings aside: they quote codes to explain them)."""
    spelled = []
    for name, path in modules(("irq", "api", "worker", "inference")):
        if name == "irq.error_codes":
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        found = [n for n in ast.walk(tree) if _constant(n, SPELLED_CODES) and id(n) not in docstrings]
        found += [n for n in _where_codes_go(tree) if _constant(n, CODES)]
        spelled += sorted({f"{name}:{node.lineno} {node.value!r}" for node in found})
    assert spelled == []


def _constant(node: ast.AST, values: set[str]) -> TypeGuard[ast.Constant]:
    return isinstance(node, ast.Constant) and node.value in values


def _names_a_code(node: ast.AST) -> bool:
    named = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return named in CODE_NAMES


def _where_codes_go(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in CODE_NAMES:
            yield node.value
        elif isinstance(node, ast.Assign) and any(_names_a_code(t) for t in node.targets):
            yield node.value
        elif isinstance(node, ast.Compare) and any(_names_a_code(n) for n in [node.left, *node.comparators]):
            for side in [node.left, *node.comparators]:  # `code in ("a", "b")` too
                yield from side.elts if isinstance(side, ast.Tuple | ast.Set | ast.List) else [side]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            position = CODE_ARGUMENT.get(node.func.id)
            if position is not None and len(node.args) > position:
                yield node.args[position]


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstrings' nodes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


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
