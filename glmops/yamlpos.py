"""YAML loading that remembers where every mapping key and list item came from.

`load_yaml(path)` returns plain data in which mappings are `PosDict` and sequences are `PosList`:
they behave as dict and list, and also carry `pos` (where the node starts) and the position of each
key (`key_pos`) or item (`item_pos`). YAML syntax errors (tabs included) become a LoadError that
names file, line and column.

Aliases (`*name`) may repeat at most MAX_ALIAS_VALUES values in one document, and may not refer
to a node that contains them: a few hundred bytes of nested aliases ("billion laughs") would
otherwise expand to billions of values the moment anything walks them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from glmops.errors import LoadError, Pos
from glmops.values import Unsafe


class PosDict(dict):
    """A dict that knows where it and each of its keys were written."""

    pos: Pos
    key_pos: dict[Any, Pos]

    def pos_of(self, key: Any) -> Pos:
        return self.key_pos.get(key, self.pos)


class PosList(list):
    """A list that knows where it and each of its items were written."""

    pos: Pos
    item_pos: list[Pos]

    def pos_of(self, index: int) -> Pos:
        return self.item_pos[index] if 0 <= index < len(self.item_pos) else self.pos


MAX_ALIAS_VALUES = 100_000  # values that aliases may repeat in one YAML document


def _node_pos(filename: str, node: yaml.Node) -> Pos:
    return _mark_pos(filename, node.start_mark)


def check_aliases(filename: str, root: yaml.Node) -> None:
    """Refuse a document whose aliases repeat more than MAX_ALIAS_VALUES values, or refer to a
    node that contains them (LoadError at the mapping or list that holds the alias)."""
    sizes: dict[int, int] = {}  # node -> how many values it stands for, aliases expanded
    open_nodes: set[int] = set()
    repeated = 0

    def size(node: yaml.Node, holder: yaml.Node) -> int:
        nonlocal repeated
        key = id(node)
        if key in open_nodes:
            raise LoadError("a YAML alias refers to a mapping or list that contains it", pos=_node_pos(filename, holder),
                            hint="an alias (*name) can only repeat a node written before it and outside it")
        if key in sizes:  # an alias: its node again
            repeated += sizes[key]
            if repeated > MAX_ALIAS_VALUES:
                raise LoadError(f"YAML aliases here repeat more than {MAX_ALIAS_VALUES} values (nested aliases, an 'alias bomb')",
                                pos=_node_pos(filename, holder),
                                hint="write the values out, or nest fewer aliases (*name) inside anchored (&name) values")
            return sizes[key]
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        open_nodes.add(key)
        total = 1 + sum(size(child, node) for child in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, root)


class _AliasLimit:
    """Loader mixin: every document is checked by check_aliases before it is constructed."""

    glmops_filename = "<string>"

    def get_single_node(self) -> Any:
        node = super().get_single_node()  # type: ignore[misc]
        if node is not None:
            check_aliases(self.glmops_filename, node)
        return node


class LimitedSafeLoader(_AliasLimit, yaml.SafeLoader):
    """yaml.SafeLoader with the alias limit (the from_yaml filter: YAML text from hosts)."""


_QUOTE_HINT = 'a value that starts with "{{" must be quoted: key: "{{ var }}"'
_UNQUOTED_TEMPLATE = re.compile(r"(^|[:\-\[,]\s*)\{\{")


def _mark_pos(filename: str, mark: Any) -> Pos:
    return Pos(filename, mark.line + 1, mark.column + 1)


def _make_loader(filename: str) -> type:
    class PositionLoader(_AliasLimit, yaml.SafeLoader):
        glmops_filename = filename

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> PosDict:
        loader.flatten_mapping(node)
        result = PosDict()
        result.pos = _mark_pos(filename, node.start_mark)
        result.key_pos = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                if isinstance(key_node, yaml.MappingNode) and key_node.flow_style:
                    # `msg: {{ x }}` reads as a mapping inside a mapping: the template needs quotes
                    raise LoadError("YAML read an unquoted '{{ ... }}' as a mapping", pos=_mark_pos(filename, node.start_mark),
                                    hint=_QUOTE_HINT) from None
                raise LoadError("a mapping key must be a plain value", pos=_mark_pos(filename, key_node.start_mark),
                                hint="keys are names such as 'name' or 'msg'; quote the key if it must hold special characters") from None
            if key in result:
                raise LoadError(
                    f"duplicate key '{key}'",
                    pos=_mark_pos(filename, key_node.start_mark),
                    hint="each key may appear once in a mapping; remove or rename one of them",
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_pos[key] = _mark_pos(filename, key_node.start_mark)
        return result

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> PosList:
        result = PosList(loader.construct_object(child, deep=True) for child in node.value)
        result.pos = _mark_pos(filename, node.start_mark)
        result.item_pos = [_mark_pos(filename, child.start_mark) for child in node.value]
        return result

    def construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        """`!unsafe 'text {{ x }}'`: text that is never templated (Ansible's tag)."""
        if isinstance(node, yaml.ScalarNode):
            return Unsafe(loader.construct_scalar(node))
        raise LoadError("!unsafe marks a text value; put it on each string, not on a list or mapping",
                        pos=_mark_pos(filename, node.start_mark), hint="key: !unsafe '{{ stays as written }}'")

    PositionLoader.add_constructor("!unsafe", construct_unsafe)
    PositionLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    PositionLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return PositionLoader


def loads_yaml(text: str, filename: str = "<string>") -> Any:
    """Parse YAML text; raise LoadError naming the place of a syntax error."""
    try:
        return yaml.load(text, Loader=_make_loader(filename))  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = _mark_pos(filename, mark) if mark else Pos(filename)
        problem = exc.problem or str(exc)
        lines = text.splitlines()
        first = exc.context_mark.line if exc.context_mark else (mark.line if mark else 0)
        last = mark.line if mark else first
        nearby = [lines[i] for i in range(max(0, min(first, last) - 1), min(len(lines), max(first, last) + 1))]
        line = lines[mark.line] if mark and mark.line < len(lines) else ""
        hint = "check the indentation and quoting around this place"
        if "\t" in problem or "'\\t'" in problem:
            problem = "a tab character is used for indentation"
            hint = "YAML allows spaces only: replace the tabs with spaces"
        elif any(_UNQUOTED_TEMPLATE.search(item.split("#")[0].strip()) for item in nearby):
            hint = _QUOTE_HINT
        elif "mapping values are not allowed" in problem:
            hint = "a value that contains ': ' must be quoted: key: \"a: b\""
        elif re.search(r"""^\s*(-\s+)?[^:]+:\s+["'].*["']\s*\S""", line):
            hint = "text after a closing quote: quote the whole value, e.g. msg: '\"a\" b'"
        elif "found unexpected end of stream" in problem or "while scanning a quoted scalar" in str(exc.context or ""):
            hint = "a quoted value is not closed: add the closing quote"
        raise LoadError(f"YAML syntax error: {problem}", pos=pos, hint=hint) from None


def load_yaml(path: str) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a LoadError."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise LoadError("file not found", pos=Pos(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read file: {exc}", pos=Pos(path)) from None
    return loads_yaml(text, path)
