"""The real server process with the official openai and zhipuai clients, curl, and raw HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import math
import subprocess
import time

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from glmops.server.prompt import build_prompt, to_turns

from .conftest import API_KEY

SYSTEM = "You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's instructions carefully. Respond using markdown."
STORY = "你好，给我讲一个故事，大概100字"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_health_and_models(server) -> None:
    assert server.health_codes[0] == 503 and server.health_codes[-1] == 200  # 503 while the model loaded
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "chatglm3-6b" and health["backend"] == "transformers"
    assert health["device"] == "cpu" and health["dtype"] == "float32" and health["quantize"] is None and health["uptime_s"] >= 0
    models = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert [m["id"] for m in models["data"]] == ["chatglm3-6b", "tiny-bge"]  # the chat model, then the embedding model


def test_chat_usage_counts_are_true(client, server, tiny_models) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": STORY}]
    reply = client.chat.completions.create(model="chatglm3-6b", messages=messages, max_tokens=10, temperature=0.8, top_p=0.8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["chat"])
    prompt_tokens = len(tokenizer(build_prompt(to_turns(messages)), add_special_tokens=False)["input_ids"])
    assert reply.usage.prompt_tokens == prompt_tokens
    assert 0 < reply.usage.completion_tokens <= 10 and reply.usage.total_tokens == prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.role == "assistant"
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 10
    greedy = [client.chat.completions.create(model="chatglm3-6b", messages=messages, max_tokens=8, temperature=0).choices[0].message.content for _ in range(2)]
    assert greedy[0] == greedy[1]  # temperature 0 is deterministic
    seeded = [client.chat.completions.create(model="chatglm3-6b", messages=messages, max_tokens=8, seed=7).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_streaming_chunks_arrive_before_the_end(client) -> None:
    arrivals: list[float] = []
    pieces: list[str] = []
    finish = None
    started = time.monotonic()
    stream = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": STORY}], max_tokens=60,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert len(pieces) >= 5 and finish in ("stop", "length") and usage is not None
    assert arrivals[1] < arrivals[-1] * 0.8  # the first text arrived well before the last: not buffered
    whole = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": STORY}], max_tokens=60, temperature=0)
    assert "".join(pieces) == whole.choices[0].message.content


def test_tools_request_is_well_formed(client) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "北京天气？"}], tools=tools, tool_choice="auto", max_tokens=8)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.tool_calls is None or all(c.function.name == "get_weather" for c in choice.message.tool_calls)
    with_tools = reply.usage.prompt_tokens
    plain = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "北京天气？"}], max_tokens=1).usage.prompt_tokens
    assert with_tools > plain + 20  # the tool schema was rendered into the prompt
    followup = client.chat.completions.create(model="chatglm3-6b", max_tokens=4, tools=tools, messages=[
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"weather": "sunny"}'},
    ])
    assert followup.usage.prompt_tokens > with_tools


def test_embeddings(client) -> None:
    single = client.embeddings.create(model="bge-large-zh-v1.5", input="你好")
    batch = client.embeddings.create(model="bge-large-zh-v1.5", input=["你好", "hello world", "你好"])
    vectors = [d.embedding for d in batch.data]
    assert len(vectors) == 3 and len(vectors[0]) == 32
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)
    assert batch.usage.prompt_tokens > single.usage.prompt_tokens >= 3


def test_zhipuai_client(open_server) -> None:
    from zhipuai import ZhipuAI

    client = ZhipuAI(api_key="unused.secret", base_url=open_server.url + "/v1")
    reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": STORY}], max_tokens=5)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens > 0


def test_the_autodl_guides_curl_request(server) -> None:
    body = {"model": "chatglm3-6b", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": STORY}],
            "stream": False, "max_tokens": 100, "temperature": 0.8, "top_p": 0.8}
    result = subprocess.run(["curl", "-sS", "-X", "POST", server.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
                             "-H", f"Authorization: Bearer {API_KEY}", "-d", json.dumps(body, ensure_ascii=False)],
                            capture_output=True, text=True, check=True)
    reply = json.loads(result.stdout)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] <= 100


def test_auth(server) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    missing = httpx.post(server.url + "/v1/chat/completions", json=body)
    wrong = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-wrong"})
    right = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert wrong.status_code == 401 and right.status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200  # health needs no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert API_KEY not in server.log.read_text()


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_requests_get_a_clear_400(server, body: dict, param: str) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert "Traceback" not in response.text


def test_bad_json_and_unknown_route(server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    assert httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=headers).status_code == 400
    missing = httpx.get(server.url + "/v1/nothing", headers=headers)
    assert missing.status_code == 404 and "error" in missing.json()


def test_embeddings_without_a_model_is_404(open_server) -> None:
    response = httpx.post(open_server.url + "/v1/embeddings", json={"input": "x"})
    assert response.status_code == 404 and "no embedding model" in response.json()["error"]["message"]
    assert httpx.post(open_server.url + "/v1/embeddings", json={"input": []}).status_code == 400


def test_client_disconnect_stops_generation(open_server) -> None:
    before = httpx.get(open_server.url + "/health").json()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6000, "temperature": 1.0, "stream": True}
    with httpx.stream("POST", open_server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = httpx.get(open_server.url + "/health").json()
        if health["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.2)
    assert health["cancelled"] == before["cancelled"] + 1
    quick = httpx.post(open_server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=10)
    assert quick.status_code == 200  # the model is free again: the abandoned generation ended


def test_concurrent_requests_queue_and_overflow(server, open_server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60).status_code, range(8)))
    assert codes == [200] * 8
    slow = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "temperature": 1.0}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: httpx.post(open_server.url + "/v1/chat/completions", json=slow, timeout=120), range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 503 in codes  # one generating, one waiting, the rest turned away
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["error"]["code"] == "queue_full"
