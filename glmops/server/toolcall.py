"""Parse ChatGLM3's answers into content or OpenAI tool calls, WITHOUT eval: `ast` and literals only.

A tool call looks like:

    get_weather
    ```python
    tool_call(city="北京", days=3)
    ```

(the first line is the tool name, the metadata of the assistant turn). Anything that is not exactly
a call of `tool_call` with keyword arguments whose values are literals is returned as plain text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

MAX_SOURCE = 20_000  # longer "calls" are not parsed at all


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def parse_arguments(source: str) -> dict[str, Any] | None:
    """`tool_call(a=1, b="x")` -> {'a': 1, 'b': 'x'}; None unless it is exactly that shape."""
    if len(source) > MAX_SOURCE:
        return None
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id != "tool_call" or call.args:
        return None
    arguments: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:  # **kwargs
            return None
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None
    try:
        json.dumps(arguments)
    except (TypeError, ValueError):
        return None  # sets, bytes, complex: not JSON
    return arguments


def parse_output(text: str, tool_names: set[str] | None) -> tuple[str, list[ToolCall]]:
    """Split the model's output into plain content and tool calls (only of tools that were offered)."""
    content_parts: list[str] = []
    calls: list[ToolCall] = []
    for piece in text.split("<|assistant|>"):
        metadata, sep, body = piece.partition("\n")
        name = metadata.strip()
        if not sep:
            content_parts.append(piece.strip())
        elif not name:
            content_parts.append(body.strip())
        elif tool_names and name in tool_names and (arguments := parse_arguments(_code(body))) is not None:
            calls.append(ToolCall(name, arguments))
        else:
            content_parts.append(piece.strip())
    return "\n".join(p for p in content_parts if p).strip(), calls


def _code(body: str) -> str:
    """The text inside a ```python fence (or the body itself)."""
    code = body.strip()
    if code.startswith("```"):
        lines = code.split("\n")
        code = "\n".join(lines[1:-1] if len(lines) > 1 and lines[-1].strip() == "```" else lines[1:])
    return code
