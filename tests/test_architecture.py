"""The package's shape, read from its source: no import cycle, every statement through
the timed path (db.py), the embedded cluster built in one place, modules and functions
of a readable size.

Each check walks ``service/apinalytics`` with ``ast``; nothing is imported or run.
Imports inside ``if TYPE_CHECKING:`` are for types only and do not count; imports
inside functions do (a cycle deferred to call time is still a cycle).

The size checks, and the check of the timed path, name the modules and functions
that fail them today in explicit lists, each with its reason: being split or moved.
A module or function not listed that fails them fails the test; the lists are to
shrink as the work they name lands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "apinalytics"
NAME = "apinalytics"

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
# The decode hot path is written out for speed, one function per batch (DESIGN.md).
LONG_FUNCTIONS_ALLOWED_IN = {"ingest/decode.py"}
# A module over the limit says why in the first lines of its docstring, with these words.
SIZE_REASON = "300 lines"

BEING_SPLIT = "being split"
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}

# Methods of an asyncpg connection that send a statement. Outside db.py they are
# called through db.timed / db.fetch(conn, label, ...) and the like, never directly.
STATEMENT_METHODS = {
    "fetch",
    "fetchrow",
    "fetchval",
    "execute",
    "executemany",
    "copy_records_to_table",
    "copy_to_table",
    "copy_from_table",
    "copy_from_query",
    "cursor",
    "prepare",
}
# Receivers whose methods of those names are the timed path itself (the db module, a
# Database) or not a statement (a cursor's next rows, aiohttp's response.prepare).
TIMED_RECEIVERS = {"db", "cursor", "resp", "response"}
# Modules with direct statements left today, being moved onto the timed path.
UNTIMED_STATEMENTS_IN: dict[str, str] = {}


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@cache
def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``, except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _run_time_nodes(other)
            continue
        yield child
        yield from _run_time_nodes(child)


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports at run time.

    ``from . import x`` imports the submodule ``x``; ``from .m import name`` imports
    ``m`` (and ``m.name`` if that is a module). Importing a submodule also initialises
    its parent packages, which are already being initialised: no edge for those.
    """
    modules = _modules()
    path = modules[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in _run_time_nodes(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = {f"{source}.{a.name}" for a in node.names} & modules.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(source)
    return {m for m in found if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    return {m: _imports(m) for m in _modules()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_relative_lazy_and_type_only_imports() -> None:
    graph = _graph()
    # from .db import Database; from . import workers (inside a function in serve_cli).
    assert "apinalytics.db" in graph["apinalytics.keys"]
    assert "apinalytics.workers" in graph["apinalytics.serve_cli"]
    # keys imports GroupWriter under TYPE_CHECKING only.
    assert "apinalytics.ingest.group" not in graph["apinalytics.keys"]


def test_no_import_cycle_in_the_package() -> None:
    assert _cycles(_graph()) == []


def test_keys_load_no_ingest_module() -> None:
    """Any module reads keys.py; it must not drag the ingest stack in for a type."""
    graph = _graph()
    seen: set[str] = set()
    todo = ["apinalytics.keys"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    assert not {m for m in seen if m.startswith("apinalytics.ingest")}


def _untimed_statements(path: Path) -> list[str]:
    out = []
    for node in ast.walk(_tree(path)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in STATEMENT_METHODS
            and not (
                isinstance(node.func.value, ast.Name) and node.func.value.id in TIMED_RECEIVERS
            )
            and not (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "db")
        ):
            out.append(f"{_relative(path)}:{node.lineno} .{node.func.attr}(...)")
    return out


def test_every_statement_goes_through_the_timed_path() -> None:
    found = [
        where
        for module, path in _modules().items()
        if module != "apinalytics.db" and _relative(path) not in UNTIMED_STATEMENTS_IN
        for where in _untimed_statements(path)
    ]
    assert found == [], "use db.timed or db.fetch(conn, label, sql, *args) and the like"


def test_the_embedded_cluster_is_built_in_one_place() -> None:
    """``localdb.project_cluster(settings)`` is where serve and the commands get it."""
    builders = [
        f"{_relative(path)}:{node.lineno}"
        for path in _modules().values()
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "LocalCluster")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "LocalCluster")
        )
    ]
    assert len(builders) == 1 and builders[0].startswith("localdb.py:"), builders


def _docstring_head(path: Path) -> str:
    return ast.get_docstring(_tree(path)) or ""


def _long_modules() -> dict[str, int]:
    out = {}
    for path in _modules().values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and SIZE_REASON not in _docstring_head(path):
            out[_relative(path)] = lines
    return out


def _long_functions() -> dict[str, int]:
    out = {}
    for path in _modules().values():
        if _relative(path) in LONG_FUNCTIONS_ALLOWED_IN:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out[f"{_relative(path)}:{node.name}"] = lines
    return out


def test_no_module_over_300_lines_without_a_reason_at_its_top() -> None:
    unlisted = {m: n for m, n in _long_modules().items() if m not in LONG_MODULES}
    assert unlisted == {}, (
        f"split these modules, or say why they are long (with the words {SIZE_REASON!r}) "
        "in their docstring"
    )


def test_no_function_over_60_lines() -> None:
    unlisted = {f: n for f, n in _long_functions().items() if f not in LONG_FUNCTIONS}
    assert unlisted == {}, "split these functions"
