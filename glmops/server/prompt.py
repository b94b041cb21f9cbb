"""The ChatGLM3 chat format, as pure functions.

    [gMASK]sop<|system|>\n{system}<|user|>\n{question}<|assistant|>\n{answer}...<|assistant|>

Each message is `<|role|>{metadata}\n{content}`. Only this module's template puts special tokens in
the prompt: `prompt_segments` marks which pieces are special, and everything a client sent (content,
tool names, tool schemas) is a plain-text segment, encoded as text even where it spells
`<|system|>` or `[gMASK]`. Tools are rendered into the system turn (the
system text, a newline, then the tools as indented JSON), tool results are `<|observation|>`
turns, an assistant's earlier tool call carries the tool name as metadata. Generation stops at
eos, `<|user|>` and `<|observation|>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PREFIX = "[gMASK]sop"
ROLES = ("system", "user", "assistant", "observation")
STOP_TOKENS = ("<|user|>", "<|observation|>")
SPECIAL_TOKENS = ("[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
TOOLS_PREAMBLE = "Answer the following questions as best as you can. You have access to the following tools:"


@dataclass
class Turn:
    """One message in ChatGLM3's terms."""

    role: str  # system | user | assistant | observation
    content: str
    metadata: str = ""
    tools: list[dict[str, Any]] | None = None


def tool_call_text(name: str, arguments: str | dict[str, Any]) -> str:
    """How ChatGLM3 writes a tool call it made: the code block under metadata=name."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    if not isinstance(args, dict):
        args = {}
    rendered = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in args.items())
    return f"```python\ntool_call({rendered})\n```"


def to_turns(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[Turn]:
    """OpenAI messages (+ tools) -> ChatGLM3 turns, as the official api_server does."""
    turns: list[Turn] = []
    functions = [t.get("function", t) for t in (tools or [])]
    if functions:
        turns.append(Turn("system", TOOLS_PREAMBLE, tools=functions))
    skip_first_system = bool(functions)
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
        if role in ("tool", "function"):
            turns.append(Turn("observation", content))
        elif role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            calls = message.get("tool_calls") or [{"function": message["function_call"]}]
            if content:
                turns.append(Turn("assistant", content))
            for call in calls:
                function = call.get("function", {})
                turns.append(Turn("assistant", tool_call_text(function.get("name", ""), function.get("arguments", "{}")), metadata=function.get("name", "")))
        elif role == "system" and skip_first_system:
            skip_first_system = False
            turns[0].content = content or turns[0].content
        else:
            turns.append(Turn(role, content))
    return turns


def turn_body(turn: Turn) -> str:
    """Everything of a turn after its role token: plain text."""
    content = turn.content
    if turn.role == "system" and turn.tools:
        content = content + "\n" + json.dumps(turn.tools, indent=4, ensure_ascii=False)
    return f"{turn.metadata}\n{content}"


def prompt_segments(turns: list[Turn], prefix: str = "") -> list[tuple[str, bool]]:
    """The prompt as (text, is_special) pieces: special tokens from the template, all else text.

    `prefix` is the start of the answer the model must continue (a forced tool call).
    """
    segments: list[tuple[str, bool]] = [("[gMASK]", True), ("sop", True)]
    for turn in turns:
        segments += [(f"<|{turn.role}|>", True), (turn_body(turn), False)]
    segments.append(("<|assistant|>", True))
    if prefix:
        segments.append((prefix, False))
    return segments


def build_prompt(turns: list[Turn], prefix: str = "") -> str:
    """The whole prompt as text, ending with `<|assistant|>` (and `prefix`) for the model to answer."""
    return "".join(text for text, _ in prompt_segments(turns, prefix))


def forced_call_prefix(name: str) -> str:
    """How a ChatGLM3 answer that calls `name` starts (metadata line, then the code block)."""
    return f"{name}\n```python\ntool_call("


def to_history(turns: list[Turn]) -> tuple[list[dict[str, Any]], str, str]:
    """(history, query, role) for a real ChatGLM3 tokenizer's build_chat_input()."""
    history = [{"role": t.role, "content": t.content, "metadata": t.metadata, **({"tools": t.tools} if t.tools else {})} for t in turns[:-1]]
    last = turns[-1]
    return history, last.content, last.role
