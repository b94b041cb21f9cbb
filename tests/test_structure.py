"""The shape of the executor and the loader (issue 21, "composed objects"), checked on the source.

The play runner and the loader are composed of parts that are given a context, not mixins that
read attributes some other class sets: every `self.NAME` a class reads is declared by that class
(or a base class of glmops's own), and no function is over 100 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import glmops
from glmops.executor.runner import PlaybookRunner
from glmops.playbook.loader import Loader

PACKAGE = Path(glmops.__file__).resolve().parent
COMPOSED = ("executor", "playbook")
MAX_FUNCTION_LINES = 100


def _files() -> list[Path]:
    return sorted(p for sub in COMPOSED for p in (PACKAGE / sub).glob("*.py"))


def _classes() -> dict[str, ast.ClassDef]:
    """Every top-level class of executor/ and playbook/, by name (names are unique there)."""
    classes: dict[str, ast.ClassDef] = {}
    for path in _files():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                assert node.name not in classes, f"two classes named {node.name} in glmops/executor and glmops/playbook"
                classes[node.name] = node
    return classes


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return True
    return False


def _declared(node: ast.ClassDef) -> set[str]:
    """Names a class declares itself: methods, class attributes (annotations only in a dataclass,
    where they are fields), and attributes its methods assign (`self.NAME = ...`)."""
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and (item.value is not None or _is_dataclass(node)):
            names.add(item.target.id)
    for sub in ast.walk(node):
        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target] if isinstance(sub, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


def _read(node: ast.ClassDef) -> dict[str, int]:
    """`self.NAME` reads in the class's methods: name -> first line."""
    reads: dict[str, int] = {}
    for sub in ast.walk(node):
        if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load) and isinstance(sub.value, ast.Name)
                and sub.value.id == "self"):
            reads.setdefault(sub.attr, sub.lineno)
    return reads


def test_every_attribute_a_class_reads_is_declared_by_it() -> None:
    """A mixin reads attributes another class sets (`self.play`, `self._stop`...): not here."""
    classes = _classes()
    undeclared = []
    for name, node in classes.items():
        bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
        if any(b not in classes for b in bases):
            continue  # subclasses another library's class (jinja2, Mapping, ValueError): its attributes are its own
        declared = _declared(node)
        for base in bases:
            declared |= _declared(classes[base])
        undeclared += [f"{name}.{attr} (line {line})" for attr, line in _read(node).items() if attr not in declared]
    assert not undeclared, "attributes read but never declared by the class: " + ", ".join(undeclared)


def test_runner_and_loader_are_composed_not_mixed() -> None:
    """PlaybookRunner and Loader have no base class of glmops's own; their parts are attributes."""
    for cls in (PlaybookRunner, Loader):
        own = [base.__qualname__ for base in cls.__mro__[1:] if base.__module__.startswith("glmops")]
        assert own == [], f"{cls.__name__} inherits from {own}"


def test_no_function_over_100_lines() -> None:
    long = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 100 lines: " + ", ".join(long)
