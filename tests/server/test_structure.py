"""The server's shape (issue 21): a small create_app, small functions, one place that runs a generation."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "glmops" / "server"
MAX_FUNCTION_LINES = 100
MAX_CREATE_APP_LINES = 60


def functions(path: Path) -> list[tuple[str, int]]:
    """(name, lines) of every function and method in a file, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None]


def test_create_app_is_small() -> None:
    lengths = [lines for name, lines in functions(SERVER / "app.py") if name == "create_app"]
    assert len(lengths) == 1, "glmops/server/app.py must define create_app once"
    assert lengths[0] <= MAX_CREATE_APP_LINES, f"create_app has {lengths[0]} lines (at most {MAX_CREATE_APP_LINES})"


def test_no_function_in_the_server_is_over_100_lines() -> None:
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 10  # the walk found the package
    long = [f"{path.relative_to(SERVER)}:{name} ({lines} lines)" for path in files for name, lines in functions(path) if lines > MAX_FUNCTION_LINES]
    assert not long, "functions over 100 lines in glmops/server/: " + ", ".join(long)


def test_one_place_runs_the_backends_generation() -> None:
    """Streaming and whole answers consume the same generation: only the service calls backend.generate()."""
    callers = []
    for path in sorted(SERVER.rglob("*.py")):
        if "backends" in path.relative_to(SERVER).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "generate":
                callers.append(path.name)
    assert callers == ["service.py"], f"backend.generate() is called from {callers}; only service.py's Generation may call it"
