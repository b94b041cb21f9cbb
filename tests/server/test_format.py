"""The ChatGLM3 prompt format and tool-call parsing: pure functions."""

from __future__ import annotations

import json

import pytest

from glmops.server.prompt import TOOLS_PREAMBLE, build_prompt, to_history, to_turns
from glmops.server.toolcall import parse_arguments, parse_output

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "天气", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_plain_conversation() -> None:
    turns = to_turns([
        {"role": "system", "content": "You are ChatGLM3."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "讲个故事"},
    ])
    assert build_prompt(turns) == "[gMASK]sop<|system|>\nYou are ChatGLM3.<|user|>\n你好<|assistant|>\n你好！<|user|>\n讲个故事<|assistant|>"


def test_tools_go_into_the_system_turn_and_results_are_observations() -> None:
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": '{"temp": 25}'},
    ]
    prompt = build_prompt(to_turns(messages, [WEATHER]))
    system = "<|system|>\nUse tools.\n" + json.dumps([WEATHER["function"]], indent=4, ensure_ascii=False)
    assert prompt.startswith("[gMASK]sop" + system + "<|user|>\n北京天气？")
    assert '<|assistant|>get_weather\n```python\ntool_call(city="北京")\n```' in prompt
    assert prompt.endswith('<|observation|>\n{"temp": 25}<|assistant|>')
    default = build_prompt(to_turns([{"role": "user", "content": "x"}], [WEATHER]))
    assert default.startswith("[gMASK]sop<|system|>\n" + TOOLS_PREAMBLE)


def test_history_for_a_real_chatglm3_tokenizer() -> None:
    history, query, role = to_history(to_turns([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], [WEATHER]))
    assert query == "q" and role == "user"
    assert history == [{"role": "system", "content": "s", "metadata": "", "tools": [WEATHER["function"]]}]


def test_tool_call_parsed_with_literals_only() -> None:
    output = 'get_weather\n```python\ntool_call(city="北京", days=3, opts={"unit": "c"}, when=None)\n```'
    content, calls = parse_output(output, {"get_weather"})
    assert content == "" and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments_json) == {"city": "北京", "days": 3, "opts": {"unit": "c"}, "when": None}
    assert parse_output("\n今天天气很好。", {"get_weather"}) == ("今天天气很好。", [])
    assert parse_output("\nplain answer", None) == ("plain answer", [])


@pytest.mark.parametrize(
    "code",
    [
        'tool_call(city=__import__("os").system("touch /tmp/glmops-pwned"))',
        "tool_call(city=open('/etc/passwd').read())",
        "tool_call(x=(lambda: 1)())",
        "tool_call(x=().__class__.__bases__)",
        "tool_call(**{'a': 1})",
        "tool_call('positional')",
        "exec('print(1)')",
        "tool_call(x=" + "[" * 5000 + "]" * 5000 + ")",
        "tool_call(x={1, 2})",
        "tool_call(x=1); import os",
        "not python at all (",
    ],
)
def test_hostile_tool_calls_are_plain_content(code: str) -> None:
    assert parse_arguments(code) is None
    content, calls = parse_output(f"get_weather\n```python\n{code}\n```", {"get_weather"})
    assert calls == [] and "get_weather" in content


def test_unoffered_tool_is_not_called() -> None:
    content, calls = parse_output('rm_rf\n```python\ntool_call(path="/")\n```', {"get_weather"})
    assert calls == [] and "rm_rf" in content
