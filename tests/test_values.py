"""One meaning for booleans and templates (glmops.values), as ansible-core 2.19 reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from glmops.errors import ArgumentError
from glmops.modules.base import coerce
from glmops.playbook.filters import to_bool as bool_filter
from glmops.playbook.loader import load_playbook
from glmops.values import NotABoolean, has_template, is_template, to_bool, truthy

# value, strict to_bool (module argument / keyword), `bool` filter, condition
BOOLEANS: list[tuple[Any, Any, bool, bool]] = [
    (True, True, True, True),
    (False, False, False, False),
    ("yes", True, True, True),
    ("YES", True, True, True),
    (" on ", True, True, True),
    ("true", True, True, True),
    ("True", True, True, True),
    ("y", True, True, True),
    ("t", True, True, True),
    ("1", True, True, True),
    (1, True, True, True),
    (1.0, True, True, True),
    (b"yes", True, True, True),
    ("no", False, False, False),
    ("Off", False, False, False),
    ("false", False, False, False),
    ("n", False, False, False),
    ("f", False, False, False),
    ("0", False, False, False),
    (0, False, False, False),
    (0.0, False, False, False),
    (2, NotABoolean, False, True),
    (-1, NotABoolean, False, True),
    (0.5, NotABoolean, False, True),
    ("2", NotABoolean, False, True),
    ("maybe", NotABoolean, False, True),
    ("", NotABoolean, False, False),
    (None, NotABoolean, False, False),
    ([], NotABoolean, False, False),
    ([0], NotABoolean, False, True),
    ({}, NotABoolean, False, False),
]


@pytest.mark.parametrize("value,strict,filtered,condition", BOOLEANS)
def test_boolean_meanings(value: Any, strict: Any, filtered: bool, condition: bool) -> None:
    if strict is NotABoolean:
        with pytest.raises(NotABoolean):
            to_bool(value)
    else:
        assert to_bool(value) is strict
    assert to_bool(value, strict=False) is filtered
    assert bool_filter(value) is filtered
    assert truthy(value) is condition


@pytest.mark.parametrize("value,expected", [(v, s) for v, s, _, _ in BOOLEANS if not isinstance(v, (bytes, list, dict))])
def test_module_bool_arguments_use_the_same_words(value: Any, expected: Any) -> None:
    if value is None:
        assert coerce(value, "bool", name="force") is None  # an unset argument stays unset
    elif expected is NotABoolean:
        with pytest.raises(ArgumentError, match="expected a boolean"):
            coerce(value, "bool", name="force")
    else:
        assert coerce(value, "bool", name="force") is expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ("{{ x }}", True),
        ("a {% if x %}b{% endif %}", True),
        ("{# a comment #}", True),
        ("plain", False),
        ("{ x }", False),
        ("100%", False),
        ("#", False),
        (None, False),
        (5, False),
        (["{{ x }}"], False),  # is_template looks at one string only
    ],
)
def test_is_template(value: Any, expected: bool) -> None:
    assert is_template(value) is expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ("{{ x }}", True),
        (["a", ["b", "{# c #}"]], True),
        ({"k": {"deep": "{% raw %}{% endraw %}"}}, True),
        ({"{{ key }}": "v"}, True),
        (("a", "b"), False),
        ({"k": 1, "j": [2, "x"]}, False),
        (3, False),
    ],
)
def test_has_template(value: Any, expected: bool) -> None:
    assert has_template(value) is expected


@pytest.mark.parametrize("word,expected", [("'1'", True), ("y", True), ("0", False), ("off", False), ("True", True)])
def test_boolean_keywords_in_playbooks_take_the_same_words(tmp_path: Path, word: str, expected: bool) -> None:
    book = tmp_path / "site.yml"
    book.write_text(f"- hosts: all\n  become: {word}\n  gather_facts: {word}\n  tasks: []\n")
    play = load_playbook(str(book)).plays[0]
    assert (play.become, play.gather_facts) == (expected, expected)
