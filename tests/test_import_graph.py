"""No import circle inside glmops/: every module's glmops imports, walked with `ast`, form no cycle.

Counted: `import glmops.x` and `from glmops.x import y` / `from .x import y` anywhere in a module,
at module level and inside functions (a function-level import that closes a circle is still a
circle at run time, only a hidden one). Not counted: imports under `if TYPE_CHECKING:`, which never
run. `from glmops.pkg import name` points at `glmops.pkg.name` when that is a module, else at `glmops.pkg`.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "glmops"


def module_name(path: Path) -> str:
    """`glmops/a/b.py` -> 'glmops.a.b'; `glmops/a/__init__.py` -> 'glmops.a'."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Every module under glmops/ by its dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under `node` that can run (the body of `if TYPE_CHECKING:` left out)."""
    for child in ast.iter_child_nodes(node):
        skip_body = isinstance(child, ast.If) and is_type_checking(child.test)
        for statement in child.orelse if skip_body else [child]:  # type: ignore[attr-defined]
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                yield statement
            else:
                yield from runtime_imports(statement)


def base_of(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names (relative levels resolved against `name`)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def edges(name: str, path: Path, modules: Collection[str], source: str | None = None) -> set[str]:
    """The glmops modules that `name` (at `path`, with `source` or the file's text) imports at run time."""
    out: set[str] = set()
    for node in runtime_imports(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in modules}
            continue
        base = base_of(name, path, node)
        for alias in node.names:
            target = f"{base}.{alias.name}"
            if target in modules:
                out.add(target)
            elif base in modules:
                out.add(base)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """glmops module -> the glmops modules it imports at run time."""
    modules = all_modules()
    return {name: edges(name, path, modules) for name, path in modules.items()}


def test_the_walker_sees_relative_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The walker itself: a relative import inside a function counts, a TYPE_CHECKING one does not."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nelse:\n    import glmops.c\n"
              "def f():\n    from . import d\n    from ..e import g\n")
    path = PACKAGE / "pkg" / "a.py"
    modules = {"glmops.pkg", "glmops.pkg.a", "glmops.pkg.b", "glmops.c", "glmops.pkg.d", "glmops.e"}
    assert edges("glmops.pkg.a", path, modules, source) == {"glmops.c", "glmops.pkg.d", "glmops.e"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_glmops() -> None:
    """No group of glmops modules imports each other in a circle, of any length."""
    graph = import_graph()
    assert len(graph) > 50 and graph["glmops.cli"], "the walker found the package"
    found = cycles(graph)
    detail = "\n".join(" <-> ".join(component) for component in found)
    assert not found, f"import circles (break them: move the shared piece below both):\n{detail}"


def test_the_loader_does_not_import_the_executor() -> None:
    """playbook/ (loading) sits below executor/ (running): what both need (yamlpos, loop keywords) is below both."""
    graph = import_graph()
    upward = {name: sorted(t for t in targets if t.startswith("glmops.executor"))
              for name, targets in graph.items() if name.startswith("glmops.playbook")}
    found = {name: targets for name, targets in upward.items() if targets}
    assert not found, f"playbook/ modules import the executor: {found}"
