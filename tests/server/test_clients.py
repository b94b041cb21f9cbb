"""Issue 9, part 1: what real clients send, each with the client that showed it, against the real server process."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from glmops.server.app import held_deltas
from glmops.server.jsonmode import SchemaError, check_schema, output_problem
from glmops.server.toolcall import ToolCall

from .conftest import API_KEY

HI = [{"role": "user", "content": "你好"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "天气", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


# -- 1. model names ----------------------------------------------------------------------------------------
def test_zhipuai_client_with_the_guides_model_name(open_server) -> None:
    from zhipuai import ZhipuAI

    client = ZhipuAI(api_key="unused.secret", base_url=open_server.url + "/v1")
    reply = client.chat.completions.create(model="chatglm3_", messages=HI, max_tokens=3)  # what zhipu_api_request.py sends
    assert reply.choices[0].message.role == "assistant" and reply.model == "chatglm3-6b"


def test_model_aliases_and_404(client) -> None:
    for name in ("chatglm3", "chatglm3-6b", "chatglm3_"):
        assert client.chat.completions.create(model=name, messages=HI, max_tokens=1).choices[0].message.role == "assistant"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=HI, max_tokens=1)
    assert caught.value.body["code"] == "model_not_found" and "chatglm3-6b" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-ada-002", input="你好")
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="davinci-002", prompt="hi", max_tokens=1)


# -- 2. embeddings: token ids, dimensions --------------------------------------------------------------------
def test_embeddings_from_token_ids(client, tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["embed"])
    texts = ["你好", "hello world"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    by_text = [d.embedding for d in client.embeddings.create(model="bge-large-zh-v1.5", input=texts).data]
    by_ids = [d.embedding for d in client.embeddings.create(model="bge-large-zh-v1.5", input=ids).data]  # as LangChain's OpenAIEmbeddings sends
    one = client.embeddings.create(model="bge-large-zh-v1.5", input=ids[1]).data[0].embedding
    assert by_ids[0] == pytest.approx(by_text[0], abs=1e-5) and by_ids[1] == pytest.approx(by_text[1], abs=1e-5)
    assert one == pytest.approx(by_text[1], abs=1e-5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="bge-large-zh-v1.5", input=[[10**6]])
    assert "vocabulary" in caught.value.body["message"]


def test_embedding_dimensions(client) -> None:
    full = client.embeddings.create(model="bge-large-zh-v1.5", input="你好").data[0].embedding
    short = client.embeddings.create(model="bge-large-zh-v1.5", input="你好", dimensions=8).data[0].embedding
    assert len(short) == 8 and abs(math.sqrt(sum(x * x for x in short)) - 1) < 1e-5
    norm = math.sqrt(sum(x * x for x in full[:8]))
    assert short == pytest.approx([x / norm for x in full[:8]], abs=1e-5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="bge-large-zh-v1.5", input="你好", dimensions=33)
    assert caught.value.body["param"] == "dimensions" and "32" in caught.value.body["message"]


# -- 3. routes: models.retrieve, legacy completions ---------------------------------------------------------
def test_models_retrieve(client) -> None:
    assert client.models.retrieve("chatglm3-6b").id == "chatglm3-6b"
    assert client.models.retrieve("chatglm3").id == "chatglm3"
    assert client.models.retrieve("tiny-bge").owned_by == "glmops"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_legacy_completions(client) -> None:
    reply = client.completions.create(model="chatglm3-6b", prompt="你好", max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 5
    pieces, usage, finish = [], None, None
    for chunk in client.completions.create(model="chatglm3-6b", prompt="你好", max_tokens=5, temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == reply.choices[0].text and finish == reply.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens
    echoed = client.completions.create(model="chatglm3-6b", prompt="你好", max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == "你好" + reply.choices[0].text


def test_legacy_completions_with_curl(server) -> None:
    result = subprocess.run(["curl", "-sS", server.url + "/v1/completions", "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEY}",
                             "-d", json.dumps({"model": "chatglm3", "prompt": ["hello"], "max_tokens": 3})], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["choices"][0]["index"] == 0
    bad = subprocess.run(["curl", "-sS", server.url + "/v1/completions", "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEY}",
                          "-d", json.dumps({"prompt": "hi", "suffix": "x"})], capture_output=True, text=True, check=True)
    assert json.loads(bad.stdout)["error"]["param"] == "suffix"


# -- 4. parameters that were silently ignored -----------------------------------------------------------------
def test_response_format(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # OpenAI's own rule: ask for JSON in the messages
        client.chat.completions.create(model="chatglm3-6b", messages=HI, response_format={"type": "json_object"}, max_tokens=5)
    assert "json" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:  # a schema keyword that cannot be enforced is refused, not ignored
        client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "answer in JSON"}], max_tokens=5,
                                       response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "patternProperties": {}}}})
    assert "patternProperties" in caught.value.body["message"]
    asking = [{"role": "user", "content": "Reply with a JSON object"}]
    try:  # the tiny random model cannot write JSON: then a clear error after the retries, never invalid JSON as success
        reply = client.chat.completions.create(model="chatglm3-6b", messages=asking, response_format={"type": "json_object"}, max_tokens=8, temperature=0.9)
        assert reply.choices[0].finish_reason == "length" or isinstance(json.loads(reply.choices[0].message.content), dict)
    except openai.InternalServerError as exc:
        assert exc.body["code"] == "invalid_model_output" and "3 times" in exc.body["message"]


def test_json_checks() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city"],
              "additionalProperties": False}
    check_schema(schema)
    fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
    assert output_problem('{"city": "北京", "days": 3}', fmt) is None
    assert "days" in output_problem('{"city": "北京", "days": 0}', fmt)
    assert "'city' is a required property" in output_problem('{"days": 2}', fmt)
    assert "not allowed" in output_problem('{"city": "x", "extra": 1}', fmt)
    assert output_problem("[1]", {"type": "json_object"}) == "the answer is JSON but not an object"
    assert output_problem("not json", {"type": "json_object"}) == "the answer is not valid JSON"
    with pytest.raises(SchemaError, match=r"\$ref"):
        check_schema({"type": "object", "properties": {"a": {"$ref": "#/x"}}})


def test_penalties_change_the_answer(client) -> None:
    def answer(**extra: float) -> str:
        return client.chat.completions.create(model="chatglm3-6b", messages=HI, max_tokens=40, temperature=0, extra_body={"min_tokens": 40}, **extra).choices[0].message.content

    plain = answer()
    assert answer(frequency_penalty=2.0) != plain and answer(presence_penalty=2.0) != plain
    assert answer(frequency_penalty=0.0, presence_penalty=0.0) == plain
    with pytest.raises(openai.BadRequestError):
        answer(presence_penalty=3.0)


def test_tool_choice_required_and_named(client, server) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chatglm3-6b", messages=HI, tool_choice="required", max_tokens=5)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chatglm3-6b", messages=HI, tools=[WEATHER], max_tokens=5,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
    for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        try:  # forced: a call of the named tool, a cut-off start of one, or a clear error; never a plain answer
            reply = client.chat.completions.create(model="chatglm3-6b", messages=HI, tools=[WEATHER, TIME] if choice == "required" else [WEATHER],
                                                   tool_choice=choice, max_tokens=3)
        except openai.InternalServerError as exc:
            assert exc.body["code"] == "invalid_model_output" and "call of" in exc.body["message"]
            continue
        message = reply.choices[0].message
        assert message.tool_calls or reply.choices[0].finish_reason == "length"
        if not message.tool_calls and choice != "required":  # the answer was started as a call of get_weather
            assert message.content.startswith("get_weather\n```python\ntool_call(")
    log = server.log.read_text()
    assert "Traceback" not in log


def test_image_parts_are_refused(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chatglm3-6b", max_tokens=1, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert caught.value.body["code"] == "unsupported_content" and "text-only" in caught.value.body["message"]
    parts = client.chat.completions.create(model="chatglm3-6b", max_tokens=1, messages=[{"role": "user", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]}])
    plain = client.chat.completions.create(model="chatglm3-6b", max_tokens=1, messages=HI)
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


# -- 5. role developer ----------------------------------------------------------------------------------------
def test_developer_is_system(client) -> None:
    system = client.chat.completions.create(model="chatglm3-6b", max_tokens=6, temperature=0, messages=[{"role": "system", "content": "Be brief."}, *HI])
    developer = client.chat.completions.create(model="chatglm3-6b", max_tokens=6, temperature=0, messages=[{"role": "developer", "content": "Be brief."}, *HI])
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens and developer.choices[0].message.content == system.choices[0].message.content


# -- 6. streaming: include_usage, legacy functions -------------------------------------------------------------------
def test_stream_usage_is_a_last_chunk_without_choices(client) -> None:
    chunks = list(client.chat.completions.create(model="chatglm3-6b", messages=HI, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason in ("stop", "length")
    without = list(client.chat.completions.create(model="chatglm3-6b", messages=HI, max_tokens=5, stream=True))
    assert all(c.usage is None and c.choices for c in without)


def test_legacy_functions_stream(server) -> None:
    body = {"messages": HI, "functions": [WEATHER["function"]], "stream": True, "max_tokens": 5}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    finishes = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
    assert finishes[-1] in ("stop", "length", "function_call") and all(f is None for f in finishes[:-1])


def test_held_answers_become_openai_deltas() -> None:
    call = ToolCall("get_weather", {"city": "北京"})
    deltas, finish = held_deltas("", [call], legacy=True, finish="stop")
    assert finish == "function_call"
    assert deltas == [{"function_call": {"name": "get_weather", "arguments": ""}}, {"function_call": {"arguments": '{"city": "北京"}'}}]
    deltas, finish = held_deltas("", [call], legacy=False, finish="stop")
    assert finish == "tool_calls" and deltas[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "北京"}'}
    assert deltas[0]["tool_calls"][0]["index"] == 0 and deltas[0]["tool_calls"][0]["id"].startswith("call_")
    assert held_deltas("text", [], legacy=True, finish="length") == ([{"content": "text"}], "length")
