"""The package's structure, read from its source with :mod:`ast` (nothing is imported):

- no import cycle among the modules of ``src/adamwkit``, counting imports made inside
  functions (lazily) but not those under ``if TYPE_CHECKING:``, which never run;
- no function or method in ``tuning/*.py`` or ``cli.py`` longer than
  :data:`MAX_FUNCTION_LINES` lines, its docstring left out.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "adamwkit"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE
MAX_FUNCTION_LINES = 80

#: (importer, imported) -> where the first such import is, as ``path:line``.
Edges = dict[tuple[str, str], str]


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` (bare or as ``typing.TYPE_CHECKING``)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that can run: at any depth (in functions too), except in the
    body of an ``if TYPE_CHECKING:`` (its ``else`` does run)."""
    if isinstance(tree, ast.Import | ast.ImportFrom):
        yield tree
        return
    if isinstance(tree, ast.If) and _is_type_checking(tree.test):
        children: list[ast.AST] = list(tree.orelse)
    else:
        children = list(ast.iter_child_nodes(tree))
    for child in children:
        yield from runtime_imports(child)


def _base(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module named by ``from <level dots><name> import ...`` in ``module``."""
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def imported_modules(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> Iterator[str]:
    """The package's modules an import statement imports: ``import a.b`` imports ``a.b``;
    ``from a import x`` imports the submodule ``a.x`` when there is one, else ``a``."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = _base(module, is_package, node.level, node.module)
        targets = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]
    for target in targets:
        if target in known:
            yield target


def import_graph(modules: dict[str, Path], root: Path = ROOT) -> Edges:
    """Each import of one of the package's modules by another, with where it is."""
    known = set(modules)
    edges: Edges = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in runtime_imports(ast.parse(path.read_text(), str(path))):
            for target in imported_modules(node, module, is_package, known):
                if target != module:
                    where = f"{path.relative_to(root.parent)}:{node.lineno}"
                    edges.setdefault((module, target), where)
    return edges


def strongly_connected(edges: Edges) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's
    algorithm, iterative): each holds at least one cycle."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def one_cycle(component: list[str], edges: Edges) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first), as the
    modules in import order, the first repeated at the end."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for a, b in sorted(edges):
            if a != node or b not in members:
                continue
            if b == start:
                return [*paths[node], start]
            if b not in paths:
                paths[b] = [*paths[node], b]
                queue.append(b)
    raise AssertionError(f"no cycle through {start} in {component}")  # not a component


def describe_cycle(component: list[str], edges: Edges) -> str:
    """The component's modules, then one cycle through them with where each import is."""
    cycle = one_cycle(component, edges)
    steps = "\n".join(f"    {a} -> {b}  ({edges[a, b]})" for a, b in itertools.pairwise(cycle))
    return f"  cycle among {', '.join(component)}:\n{steps}"


def test_no_import_cycle_among_the_package_modules() -> None:
    edges = import_graph(module_files())
    cycles = strongly_connected(edges)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(
        describe_cycle(c, edges) for c in cycles
    )


Function = ast.FunctionDef | ast.AsyncFunctionDef


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    """Every function and method, nested ones too, by qualified name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, Function):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def _docstring_lines(node: Function) -> int:
    """The lines of a function's docstring (0 without one)."""
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return (first.end_lineno or first.lineno) - first.lineno + 1
    return 0


def long_functions(
    paths: list[Path], root: Path = ROOT, limit: int = MAX_FUNCTION_LINES
) -> list[str]:
    """``path:line name (N lines)`` for each function longer than ``limit`` lines, counted
    from its ``def`` to its last line less its docstring (documentation is not logic; a
    nested function's lines count in its own and in the enclosing function's)."""
    found = []
    for path in paths:
        for name, node in functions(ast.parse(path.read_text(), str(path))):
            length = (node.end_lineno or node.lineno) - node.lineno + 1 - _docstring_lines(node)
            if length > limit:
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                found.append(f"{where} {name} ({length} lines)")
    return found


def test_no_long_functions_in_tuning_and_the_cli() -> None:
    paths = [*sorted((ROOT / "tuning").glob("*.py")), ROOT / "cli.py"]
    found = long_functions(paths)
    assert not found, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"  {f}" for f in found
    )
