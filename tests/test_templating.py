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
        ("{{ none_value | ternary('y', 'n', 'null') }}", {"none_value": None}, "null"),
        ("{{ x | default('d') }}", {"x": ""}, ""),
        ("{{ x | d('d') }}", {}, "d"),
        ("{{ r.stdout | default('none') }}", {"r": {"rc": 0}}, "none"),
        ("{{ nothere.deeper.key | default('chained') }}", {}, "chained"),
        ("{{ '1' | bool }}{{ 'no' | bool }}{{ 'maybe' | bool }}", {}, "TrueFalseFalse"),
        ("{{ ' 7 ' | int }}", {}, 7),
        ("{{ '0x1A' | int(base=16) }}", {}, 26),
        ("{{ 'abc' | int(default=5) }}", {}, 5),
        ("{{ '2.5' | float * 2 }}", {}, 5.0),
        ("{{ 'x' | float(1.5) }}", {}, 1.5),
        ("{{ 'a1b22c333' | regex_findall('[0-9]+') }}", {}, ["1", "22", "333"]),
        ("{{ 'ABC' | regex_replace('b', 'x', ignorecase=true) }}", {}, "AxC"),
        ("{{ 'no digits' | regex_search('[0-9]+') }}", {}, None),
        ("{{ {'a': {'b': [1, 2]}} | to_nice_yaml }}", {}, "a:\n  b:\n  - 1\n  - 2\n"),
        ("{{ 'a: [1, 2]' | from_yaml }}", {}, {"a": [1, 2]}),
        ("{{ 'present' | mandatory }}", {}, "present"),
        ("{{ [3, 1, 2] | sort | reverse | list }}", {}, [3, 2, 1]),
        ("{{ [1, 2, 3, 4] | select('even') | list }}", {}, [2, 4]),
        ("{{ [1, 2, 3, 4] | reject('even') | map('string') | join(',') }}", {}, "1,3"),
        ("{{ {'a': [1], 'b': 2} | combine({'a': [3]}, list_merge='append') }}", {}, {"a": [1, 3], "b": 2}),
        ("{{ [{'a': 1}, {'b': 2}] | combine }}", {}, {"a": 1, "b": 2}),
        ("{{ [{'n': 'a', 'v': 1}] | items2dict(key_name='n', value_name='v') }}", {}, {"a": 1}),
        ("{{ 512 | human_readable }}", {}, "512.00 Bytes"),
        ("{{ 1048576 | human_readable }}", {}, "1.00 MB"),
        ("{{ 2048 | human_readable(unit='K') }}", {}, "2.00 KB"),
        ("{{ 'C:\\\\x\\\\y.txt' | win_basename }}", {}, "y.txt"),
        ("{{ 'a b;rm -rf /' | quote }}", {}, "'a b;rm -rf /'"),
        ("{{ '' | quote }}", {}, "''"),
        ("{{ [] | first }}", {}, None),
        ("{{ ('a', 'b') | last }}", {}, "b"),
        ("{{ {'b': 1, 'a': 2} | length }}", {}, 2),
        ("{{ '你好' | b64encode | b64decode }}", {}, "你好"),
        ("{{ 'aGVs\\nbG8=' | b64decode }}", {}, "hello"),
        ("{{ {'k': '你'} | to_json }}", {}, '{"k": "你"}'),
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
    assert not T.all_true(["x | bool"], {"x": "false"})


@pytest.mark.parametrize(
    "expression, message",
    [
        ("{{ 'abc' | int }}", "cannot convert 'abc' to an integer"),
        ("{{ 'abc' | float }}", "cannot convert 'abc' to a number"),
        ("{{ x | mandatory }}", "mandatory variable 'x' is not defined"),
        ("{{ x | mandatory('set x in group_vars') }}", "set x in group_vars"),
        ("{{ 'not json' | from_json }}", "from_json: not valid JSON"),
        ("{{ 'a: [' | from_yaml }}", "from_yaml: not valid YAML"),
        ("{{ '%%%' | b64decode }}", "b64decode"),
        ("{{ 'x' | human_readable }}", "'x' is not a number"),
        ("{{ 3 | dict2items }}", "dict2items: expected a mapping"),
        ("{{ [1] | items2dict }}", "items2dict: each item needs 'key' and 'value'"),
        ("{{ [1] | combine({}) }}", "combine: expected mappings"),
        ("{{ 'k=v' | regex_search('(k)', 'bad') }}", "bad group reference"),
        ("{{ 'x' | nosuchfilter }}", "No filter named 'nosuchfilter'"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ '1.0' is version('2.0', 'bigger') }}", "unknown operator 'bigger'"),
        ("{{ 'x' is succeeded }}", "needs a registered task result"),
    ],
)
def test_filter_errors_are_template_errors_with_position(expression: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        T.render(expression, {}, pos=Pos("site.yml", 4, 7), field="msg")
    text = str(info.value)
    assert message in text and "site.yml:4:7" in text and "field 'msg'" in text


def test_builtin_tests_defined_undefined_none() -> None:
    v = {"a": 1, "n": None, "d": {"k": 1}}
    assert T.evaluate("a is defined and b is undefined and n is none and a is not none", v) is True
    assert T.evaluate("d.k is defined and d.x is undefined", v) is True
    assert T.evaluate("nothere.deeper is defined", v) is False  # chained undefined, as Ansible
    with pytest.raises(TemplateError, match="undefined variable 'nothere'"):
        T.evaluate("nothere.deeper == 1", v)
    with pytest.raises(TemplateError, match="undefined variable 'nothere'"):
        T.render("{{ nothere.deeper }}", v)


@pytest.mark.parametrize(
    "left, op, right, expected",
    [
        ("4.40.2", ">=", "4.40", True),
        ("4.9", "lt", "4.40", True),
        ("1.0", "==", "1.0.0", True),
        ("v2.13.0", "eq", "2.13.0", True),
        ("1.0rc1", "<", "1.0", True),
        ("1.0", "<", "1.0.1", True),
        ("2.1.2+cu121", ">", "2.1.1", True),
        ("12.2", "!=", "12.2", False),
        ("10.0", "gt", "9.9", True),
    ],
)
def test_version_test(left: str, op: str, right: str, expected: bool) -> None:
    assert T.evaluate(f"'{left}' is version('{right}', '{op}')", {}) is expected


def test_conditions_must_be_booleans_as_in_ansible_core_2_19() -> None:
    # ansible-core 2.19: "Conditionals must have a boolean result" for a str/int/list/None result
    assert T.all_true([], {})
    assert T.all_true(["flag | bool"], {"flag": "yes"}) and not T.all_true(["flag | bool"], {"flag": "False"})
    assert T.all_true(["s is truthy"], {"s": "some text"}) and not T.all_true(["xs | length > 0"], {"xs": []})
    assert not T.all_true([True, False], {})
    assert not T.all_true(["1 == 1", "2 == 3"], {})
    assert not T.all_true(["{{ t }}"], {"t": "{{ 1 == 2 }}"})
    for value in ("false", "yes", "some text", 1, 0, [1], [], None):
        with pytest.raises(TemplateError) as info:
            T.all_true(["flag"], {"flag": value}, pos=Pos("site.yml", 3, 7))
        assert "conditionals must have a boolean result" in str(info.value) and "flag | bool" in str(info.value)
    with pytest.raises(TemplateError) as info:
        T.all_true(["nope"], {}, pos=Pos("site.yml", 9, 7), field="failed_when")
    assert "site.yml:9:7" in str(info.value) and "failed_when" in str(info.value)


def test_lookup_env_and_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLMOPS_TEST_TOKEN", "s3cret")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "key.pub").write_text("ssh-ed25519 AAAA\n")
    v = {"playbook_dir": str(tmp_path)}
    assert T.render("{{ lookup('env', 'GLMOPS_TEST_TOKEN') }}", v) == "s3cret"
    assert T.render("{{ lookup('env', 'GLMOPS_NOT_SET_X', default='d') }}", v) == "d"
    assert T.render("{{ lookup('file', 'key.pub') }}", v) == "ssh-ed25519 AAAA"
    assert T.render("{{ query('env', 'GLMOPS_TEST_TOKEN') }}", v) == ["s3cret"]
    with pytest.raises(TemplateError, match="lookup plugin 'password' is not supported"):
        T.render("{{ lookup('password', '/dev/null') }}", v)
    with pytest.raises(TemplateError, match="cannot read 'nope.txt'"):
        T.render("{{ lookup('file', 'nope.txt') }}", v)


def test_error_inside_a_variable_value_is_reported_where_it_is_used() -> None:
    with pytest.raises(TemplateError) as info:
        T.render("{{ url }}", {"url": "http://{{ host }}:80"}, pos=Pos("site.yml", 3, 7), field="uri.url")
    text = str(info.value)
    assert "site.yml:3:7" in text and "undefined variable 'host'" in text and "variable 'url'" in text


def test_template_file_errors_name_the_line() -> None:
    with pytest.raises(TemplateError) as info:
        T.render_text("a\nb\nport={{ port }}\n", {}, name="api.yaml.j2")
    assert "api.yaml.j2:3" in str(info.value) and "undefined variable 'port'" in str(info.value)
    with pytest.raises(TemplateError) as info:
        T.render_text("a\n{% if x %}\n", {"x": 1}, name="api.yaml.j2")
    assert "api.yaml.j2:" in str(info.value) and "syntax error" in str(info.value)


def test_compiled_templates_are_cached() -> None:
    templar = Templar()
    templar.render("{{ a }}-{{ b }}", {"a": 1, "b": 2})
    templar.render("{{ a }}-{{ b }}", {"a": 3, "b": 4})
    assert templar._compile.cache_info().hits >= 1


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


@pytest.mark.parametrize(
    "value,expression,names",
    [
        ("plain text", False, set()),
        ("{{ a }} and {{ b.c }}", False, {"a", "b", "c"}),
        ({"k": ["{{ x | default(y) }}"], "{{ key }}": 1}, False, {"x", "y", "key"}),
        ("{% for i in items %}{{ i.ansible_host }}{% endfor %}", False, {"items", "ansible_host"}),
        ("{{ hostvars[inventory_hostname]['ansible_os_family'] }}", False, {"hostvars", "inventory_hostname", "ansible_os_family"}),
        ("{# {{ hidden }} #}", False, set()),
        ("ansible_facts.gpus | length > 0", True, {"ansible_facts", "gpus"}),
        ("{{ x }}", True, {"x"}),
        (True, True, set()),
        ("not closed {{", False, set()),
    ],
)
def test_referenced_names(value: object, expression: bool, names: set) -> None:
    assert Templar().referenced_names(value, expression=expression) == names


def test_names_are_followed_through_template_variables() -> None:
    variables = {"a": "{{ b }}", "b": ["{{ c.ansible_x }}"], "c": {}, "loop": "{{ loop }}"}
    templar = Templar()
    assert templar.names_through_variables(frozenset({"a"}), variables) == {"a", "b", "c", "ansible_x"}
    assert templar.names_through_variables(frozenset({"loop"}), variables) == {"loop"}
