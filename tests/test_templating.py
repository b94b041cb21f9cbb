"""Templating: native values, StrictUndefined messages, Ansible's filters and tests."""

from __future__ import annotations

import pytest

from glmops.errors import Pos, TemplateError
from glmops.playbook.templating import Templar

T = Templar()


def r(text, **variables):
    return T.render(text, variables)


def test_single_expression_keeps_native_type_and_text_renders_to_str() -> None:
    assert r("{{ xs }}", xs=[1, 2]) == [1, 2]
    assert r("{{ 3 }}") == 3
    assert r("{{ d }}", d={"a": 1}) == {"a": 1}
    assert r("n={{ 3 }}") == "n=3"
    assert r({"k": ["{{ a }}", "x{{ a }}"]}, a=1) == {"k": [1, "x1"]}
    assert r("plain") == "plain"
    assert r(5) == 5


def test_undefined_variable_names_variable_position_and_field() -> None:
    with pytest.raises(TemplateError) as info:
        T.render("{{ model_dir }}/x", {}, pos=Pos("site.yml", 7, 9), field="args.dest")
    text = str(info.value)
    assert "site.yml:7:9" in text and "undefined variable 'model_dir'" in text and "args.dest" in text and "default(" in text
    with pytest.raises(TemplateError, match="undefined variable 'missing'"):
        T.render("{{ missing }}", {})
    with pytest.raises(TemplateError, match="undefined variable 'nope'"):
        T.evaluate("nope", {})


def test_filter_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="int"):
        r("{{ 'abc' | int }}")
    with pytest.raises(TemplateError, match="syntax"):
        r("{{ x + }}", x=1)


@pytest.mark.parametrize(
    "expression, variables, expected",
    [
        ("{{ x | default('d') }}", {}, "d"),
        ("{{ x | d('d', true) }}", {"x": ""}, "d"),
        ("{{ 'yes' | bool }}", {}, True),
        ("{{ 'off' | bool }}", {}, False),
        ("{{ '42' | int + 1 }}", {}, 43),
        ("{{ 3 | string }}", {}, "3"),
        ("{{ 'AbC' | lower }}{{ 'AbC' | upper }}", {}, "abcABC"),
        ("{{ '  x ' | trim }}", {}, "x"),
        ("{{ ['a', 'b'] | join('-') }}", {}, "a-b"),
        ("{{ 'a,b' | split(',') }}", {}, ["a", "b"]),
        ("{{ 'aXb' | replace('X', '_') }}", {}, "a_b"),
        ("{{ 'v1.2.3' | regex_replace('^v', '') }}", {}, "1.2.3"),
        ("{{ 'torch==2.1.2' | regex_search('[0-9.]+$') }}", {}, "2.1.2"),
        ("{{ 'k=v' | regex_search('(\\\\w)=(\\\\w)', '\\\\2') }}", {}, ["v"]),
        ("{{ '/a/b/c.txt' | basename }}", {}, "c.txt"),
        ("{{ '/a/b/c.txt' | dirname }}", {}, "/a/b"),
        ("{{ {'a': 1} | to_json }}", {}, '{"a": 1}'),
        ("{{ {'b': 1, 'a': 2} | to_nice_json }}", {}, '{\n    "a": 2,\n    "b": 1\n}'),
        ("{{ {'a': [1]} | to_yaml }}", {}, "a: [1]\n"),
        ("{{ '{\"a\": 1}' | from_json }}", {}, {"a": 1}),
        ("{{ 'hi' | b64encode }}", {}, "aGk="),
        ("{{ 'aGk=' | b64decode }}", {}, "hi"),
        ("{{ \"it's\" | quote }}", {}, "'it'\"'\"'s'"),
        ("{{ [1, 2, 3] | length }}", {}, 3),
        ("{{ [1, 2, 3] | first }}-{{ [1, 2, 3] | last }}", {}, "1-3"),
        ("{{ [1, 1, 2] | unique }}", {}, [1, 2]),
        ("{{ {'a': {'x': 1}} | combine({'a': {'y': 2}}, recursive=true) }}", {}, {"a": {"x": 1, "y": 2}}),
        ("{{ {'a': 1} | combine({'a': 2}) }}", {}, {"a": 2}),
        ("{{ {'a': 1} | dict2items }}", {}, [{"key": "a", "value": 1}]),
        ("{{ [{'key': 'a', 'value': 1}] | items2dict }}", {}, {"a": 1}),
        ("{{ 1536 | human_readable }}", {}, "1.50 KB"),
        ("{{ 13958643712 | human_readable }}", {}, "13.00 GB"),
        ("{{ users | selectattr('admin') | map(attribute='name') | list }}", {"users": [{"name": "a", "admin": True}, {"name": "b", "admin": False}]}, ["a"]),
        ("{{ 1 | ternary('y', 'n') }}", {}, "y"),
    ],
)
def test_filters(expression: str, variables: dict, expected: object) -> None:
    assert T.render(expression, variables) == expected


def test_tests_on_registered_results_and_versions() -> None:
    ok = {"changed": True, "failed": False}
    bad = {"changed": False, "failed": True}
    skipped = {"changed": False, "skipped": True}
    v = {"ok": ok, "bad": bad, "sk": skipped}
    assert T.all_true(["ok is succeeded", "ok is changed", "bad is failed", "sk is skipped", "bad is not changed"], v)
    assert T.evaluate("'4.40.2' is version('4.40', '>=')", {}) is True
    assert T.evaluate("'4.9' is version('4.40', '<')", {}) is True
    assert T.evaluate("'abc' is match('a')", {}) and T.evaluate("'xabc' is search('b')", {})
    assert T.all_true([True, "1 == 1", "{{ x }}"], {"x": True})
    assert not T.all_true(["x"], {"x": "false"})


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(TemplateError):
        r("{{ ''.__class__.__mro__ }}")


def test_render_text_keeps_trailing_newline_and_names_template() -> None:
    assert T.render_text("a={{ a }}\n", {"a": 1}, name="t.j2") == "a=1\n"
    with pytest.raises(TemplateError, match="t.j2"):
        T.render_text("{{ nope }}", {}, name="t.j2")


def test_variables_holding_templates_are_rendered_when_used() -> None:
    variables = {"root": "/root/autodl-tmp", "model_dir": "{{ root }}/chatglm3-6b", "dirs": ["{{ model_dir }}", "{{ root }}/bge"]}
    assert T.render("{{ model_dir }}/config.json", variables) == "/root/autodl-tmp/chatglm3-6b/config.json"
    assert T.render("{{ dirs }}", variables) == ["/root/autodl-tmp/chatglm3-6b", "/root/autodl-tmp/bge"]
    assert T.evaluate("model_dir.endswith('6b')", variables) is True
    assert T.render_text("path={{ model_dir }}\n", variables, name="t.j2") == "path=/root/autodl-tmp/chatglm3-6b\n"
    with pytest.raises(TemplateError, match="recursive loop"):
        T.render("{{ a }}", {"a": "{{ b }}", "b": "{{ a }}"})
