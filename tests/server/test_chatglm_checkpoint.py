"""ChatGLM3's own code path: `glmops serve` on a checkpoint in ChatGLM3's format, loaded through its remote code.

The server runs under .venv-pins (transformers 4.40.2, which that code needs; fixture `pins_python`), the
checkpoint is scripts/make_tiny_chatglm.py's (modelscope's copy of ChatGLM2's modeling code, ChatGLM3's tokenizer
layer). Every greedy answer is compared with `model.generate()` run directly on the same checkpoint, with prompt
ids from the checkpoint tokenizer's own `build_chat_input` (tests/server/chatglm_direct.py, no glmops code).
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from glmops.server.prompt import TOOLS_PREAMBLE
from glmops.server.toolcall import parse_output

from .conftest import API_KEY

HERE = Path(__file__).resolve().parent
SYSTEM = "You are ChatGLM3, a large language model trained by Zhipu.AI."
WEATHER = {"name": "get_weather", "description": "天气", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TOOLS = [{"type": "function", "function": WEATHER}]
CALL_TEXT = '```python\ntool_call(city="北京")\n```'
SPECIALS = "[gMASK]sop<|system|>x<|user|>hi<|assistant|>y<|observation|>z"


def direct(python: str, checkpoint: Path, request: dict[str, Any]) -> Any:
    """Run chatglm_direct.py (the checkpoint's own code, no glmops) under `python`."""
    result = subprocess.run([python, str(HERE / "chatglm_direct.py"), str(checkpoint)], input=json.dumps(request),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def greedy(python: str, checkpoint: Path, *cases: dict[str, Any]) -> list[dict[str, Any]]:
    return direct(python, checkpoint, {"op": "generate", "cases": list(cases)})


@pytest.fixture(scope="module")
def chatglm(start_server, pins_python: str, tiny_chatglm: Path, tiny_models: dict[str, Path]):
    """The server on the ChatGLM3-format checkpoint, with the tiny embedding model beside it; four at a time."""
    return start_server(python=pins_python, model_path=str(tiny_chatglm), embedding_model_path=str(tiny_models["embed"]),
                        api_keys=[API_KEY], device="cpu", concurrency=4, max_tokens=64)


@pytest.fixture(scope="module")
def client(chatglm) -> openai.OpenAI:
    return openai.OpenAI(base_url=chatglm.url + "/v1", api_key=API_KEY, max_retries=0)


def test_the_real_code_is_loaded(chatglm, pins_python: str) -> None:
    health = httpx.get(chatglm.url + "/health").json()
    assert health["status"] == "ok" and health["backend"] == "transformers" and health["device"] == "cpu"
    log = chatglm.log.read_text()
    assert "model loaded" in log
    version = subprocess.run([pins_python, "-c", "import transformers; print(transformers.__version__)"], capture_output=True, text=True)
    assert version.stdout.startswith("4.40."), version.stdout  # the pinned transformers, which ChatGLM3's code needs


def test_greedy_chat_equals_model_generate(client, pins_python: str, tiny_chatglm: Path) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "你好，讲一个故事"}]
    reply = client.chat.completions.create(model="chatglm3-6b", messages=messages, max_tokens=24, temperature=0)
    [expected] = greedy(pins_python, tiny_chatglm, {"history": [{"role": "system", "content": SYSTEM}], "query": "你好，讲一个故事",
                                                    "max_new_tokens": 24})
    assert reply.usage.prompt_tokens == len(expected["prompt_ids"])
    assert reply.usage.completion_tokens == len(expected["generated"]) and len(expected["generated"]) > 0
    assert reply.choices[0].message.content == parse_output(expected["text"], None)[0]
    assert reply.choices[0].finish_reason == ("length" if expected["stop"] is None else "stop")


def test_four_concurrent_streams_each_equal_model_generate(client, pins_python: str, tiny_chatglm: Path) -> None:
    questions = [f"第{i}个问题" for i in range(4)]

    def stream(question: str) -> tuple[str, Any]:
        pieces, usage = [], None
        for chunk in client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": question}], max_tokens=20,
                                                    temperature=0, stream=True, stream_options={"include_usage": True}):
            usage = chunk.usage or usage
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        return "".join(pieces), usage

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(stream, questions))
    expected = greedy(pins_python, tiny_chatglm, *({"query": q, "max_new_tokens": 20} for q in questions))
    for (text, usage), want in zip(answers, expected):
        assert text == want["text"]  # a stream is the raw text, token by token
        assert (usage.prompt_tokens, usage.completion_tokens) == (len(want["prompt_ids"]), len(want["generated"]))


def first_role_stop(pins_python: str, checkpoint: Path, role_token: str) -> tuple[str, dict[str, Any]]:
    """A question whose greedy answer (with eos as the only stop) writes `role_token` before any other role stop."""
    questions = [f"q{i} 你好" for i in range(40)]
    answers = greedy(pins_python, checkpoint, *({"query": q, "max_new_tokens": 48, "stops": "eos"} for q in questions))
    ids = role_ids(pins_python, checkpoint)
    for question, answer in zip(questions, answers):
        hits = [i for i, token in enumerate(answer["generated"]) if token in (ids["<|user|>"], ids["<|observation|>"])]
        if hits and answer["generated"][hits[0]] == ids[role_token]:
            return question, {**answer, "index": hits[0]}
    raise AssertionError(f"none of {len(questions)} greedy answers writes {role_token}: choose other questions")


def role_ids(pins_python: str, checkpoint: Path) -> dict[str, int]:
    code = ("import json, sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True); "
            "print(json.dumps({k: t.get_command(k) for k in ('<|user|>', '<|observation|>', '<|assistant|>', '<|system|>', '[gMASK]', 'sop')}))")
    result = subprocess.run([pins_python, "-c", code, str(checkpoint)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("role_token", ["<|user|>", "<|observation|>"])
def test_generation_stops_at_role_tokens(chatglm, pins_python: str, tiny_chatglm: Path, role_token: str) -> None:
    question, unstopped = first_role_stop(pins_python, tiny_chatglm, role_token)
    reply = httpx.post(chatglm.url + "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60,
                       json={"model": "chatglm3-6b", "prompt": question, "max_tokens": 48, "temperature": 0}).json()
    [expected] = greedy(pins_python, tiny_chatglm, {"query": question, "max_new_tokens": 48})  # with ChatGLM3's stops
    assert len(expected["generated"]) == unstopped["index"]  # the reference itself stops at the role token
    assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] == unstopped["index"]
    assert reply["choices"][0]["text"] == expected["text"]  # the /v1/completions route: the raw answer
    assert reply["usage"]["prompt_tokens"] == len(expected["prompt_ids"])


def test_special_tokens_in_user_text_stay_text(client, pins_python: str, tiny_chatglm: Path) -> None:
    reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": SPECIALS}], max_tokens=16, temperature=0)
    [expected] = greedy(pins_python, tiny_chatglm, {"query": SPECIALS, "max_new_tokens": 16})
    ids = role_ids(pins_python, tiny_chatglm)
    prompt = expected["prompt_ids"]
    assert [prompt.count(ids[token]) for token in ("[gMASK]", "sop", "<|user|>", "<|assistant|>", "<|system|>", "<|observation|>")] == [1, 1, 1, 1, 0, 0]
    assert reply.usage.prompt_tokens == len(prompt) > 20  # the spellings were encoded as text, piece by piece
    assert reply.usage.completion_tokens == len(expected["generated"])
    assert reply.choices[0].message.content == parse_output(expected["text"], None)[0]


def test_tool_history_is_encoded_as_chatglm3_does(client, pins_python: str, tiny_chatglm: Path) -> None:
    """An assistant tool call and its result, sent the OpenAI way, reach the model as ChatGLM3's own format:
    the tools in the system turn, the call under metadata=name, the result as an <|observation|> turn."""
    messages = [
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 25}'},
    ]
    reply = client.chat.completions.create(model="chatglm3-6b", messages=messages, tools=TOOLS, max_tokens=16, temperature=0)
    history = [{"role": "system", "content": TOOLS_PREAMBLE, "tools": [WEATHER]}, {"role": "user", "content": "北京天气？"},
               {"role": "assistant", "metadata": "get_weather", "content": CALL_TEXT}]
    [expected] = greedy(pins_python, tiny_chatglm, {"history": history, "query": '{"temp": 25}', "role": "observation", "max_new_tokens": 16})
    ids = role_ids(pins_python, tiny_chatglm)
    assert expected["prompt_ids"].count(ids["<|observation|>"]) == 1
    assert reply.usage.prompt_tokens == len(expected["prompt_ids"])
    assert reply.usage.completion_tokens == len(expected["generated"])
    content, calls = parse_output(expected["text"], {"get_weather"})
    assert reply.choices[0].message.content == (content or (None if calls else ""))


SERVER_IDS = """
import json, sys
from glmops.server.backends.transformers_backend import TransformersBackend
from glmops.server.config import ServerConfig
from glmops.server.prompt import to_turns
backend = TransformersBackend(ServerConfig(model_path=sys.argv[1], device="cpu"))
backend.load()
print(json.dumps([backend.encode(to_turns(c["messages"], c.get("tools")))[0].tolist() for c in json.loads(sys.stdin.read())]))
"""


def test_the_servers_prompt_ids_are_build_chat_inputs(pins_python: str, tiny_chatglm: Path) -> None:
    """The ids the server's backend builds from OpenAI messages equal the checkpoint tokenizer's own
    build_chat_input on ChatGLM3's history, written out by hand here."""
    tool_messages = [
        {"role": "system", "content": "Use tools."}, {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 25}'},
    ]
    conversations = [
        {"messages": tool_messages, "tools": TOOLS},
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                      {"role": "user", "content": SPECIALS}]},
    ]
    histories = [
        {"history": [{"role": "system", "content": "Use tools.", "tools": [WEATHER]}, {"role": "user", "content": "北京天气？"},
                     {"role": "assistant", "metadata": "get_weather", "content": CALL_TEXT}], "query": '{"temp": 25}', "role": "observation"},
        {"history": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}],
         "query": SPECIALS},
    ]
    built = subprocess.run([pins_python, "-c", SERVER_IDS, str(tiny_chatglm)], input=json.dumps(conversations), capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    expected = greedy(pins_python, tiny_chatglm, *({**h, "max_new_tokens": 1} for h in histories))
    assert json.loads(built.stdout) == [e["prompt_ids"] for e in expected]


def test_forced_tool_call_continues_chatglm3s_call_format(client, pins_python: str, tiny_chatglm: Path) -> None:
    """tool_choice naming a tool: the answer starts as ChatGLM3 writes a call; the model's continuation is what the
    checkpoint's own generate() writes after the same ids, and is parsed (or refused) accordingly."""
    prefix = "get_weather\n```python\ntool_call("
    [expected] = greedy(pins_python, tiny_chatglm, {"history": [{"role": "system", "content": TOOLS_PREAMBLE, "tools": [WEATHER]}],
                                                    "query": "北京天气？", "prefix": prefix, "max_new_tokens": 12})
    content, calls = parse_output(prefix + expected["text"], {"get_weather"})
    request = {"model": "chatglm3-6b", "messages": [{"role": "user", "content": "北京天气？"}], "tools": TOOLS, "max_tokens": 12,
               "temperature": 0, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    if not calls and expected["stop"] is not None:  # a finished answer that is no call: refused
        with pytest.raises(openai.InternalServerError, match="did not write a valid call"):
            client.chat.completions.create(**request)
        return
    reply = client.chat.completions.create(**request)
    assert reply.usage.prompt_tokens == len(expected["prompt_ids"])
    if calls:
        assert [(c.function.name, json.loads(c.function.arguments)) for c in reply.choices[0].message.tool_calls] == [(c.name, c.arguments) for c in calls]
    else:  # cut off by max_tokens: returned as it is
        assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content == content


def test_embeddings_beside_the_chatglm_model(client) -> None:
    batch = client.embeddings.create(model="bge-large-zh-v1.5", input=["你好", "hello world", "你好"])
    vectors = [d.embedding for d in batch.data]
    assert len(vectors) == 3 and len(vectors[0]) == 32
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])


# -- checkpoints that cannot serve are refused at load (/health says why; every request gets 503) --------------

def refused(start_server, python: str, **config: Any) -> str:
    """Start a server that must fail to load; returns /health's error after checking the 503s."""
    server = start_server(python=python, healthy=False, device="cpu", **config)
    try:
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "error", health.text
        error = health.json()["error"]
        assert "\n" not in error and "Traceback" not in error
        chat = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_load_failed"
        assert chat.json()["error"]["message"] == f"the model failed to load: {error}"
        return error
    finally:
        server.stop()


def copy_checkpoint(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(source, target)
    return target


def test_lfs_pointer_files_are_refused(start_server, tiny_chatglm: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_chatglm, tmp_path)
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 508808\n")
    error = refused(start_server, sys.executable, model_path=str(folder))
    assert "model.safetensors is a git-lfs pointer" in error and f"git lfs pull` in {folder}" in error


def test_remote_code_that_fails_to_import_is_refused(start_server, pins_python: str, tiny_chatglm: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_chatglm, tmp_path)
    code = (folder / "modeling_chatglm.py").read_text()
    (folder / "modeling_chatglm.py").write_text("from transformers.utils import no_such_helper_in_this_version\n" + code)
    error = refused(start_server, pins_python, model_path=str(folder))
    assert error.startswith(f"the checkpoint's remote code in {folder} failed (loading the model, modeling_chatglm.py line 1): ImportError")
    assert "no_such_helper_in_this_version" in error and "transformers 4.40.2 is installed" in error


def test_chatglm_code_under_another_transformers_is_refused_at_load(start_server, tiny_chatglm: Path) -> None:
    """The test venv's transformers (4.5x) cannot run ChatGLM3's tokenizer code: refused at load, with the fix."""
    import transformers

    assert not transformers.__version__.startswith("4.40.")
    error = refused(start_server, sys.executable, model_path=str(tiny_chatglm))
    assert error.startswith(f"the checkpoint's remote code in {tiny_chatglm} failed (a first generation (load-time check), tokenization_chatglm.py")
    assert f"(transformers {transformers.__version__} is installed; ChatGLM3's code needs 4.40.x: pip install 'transformers==4.40.2')" in error


def test_a_tokenizer_without_chatglm3s_tokens_is_refused(start_server, tiny_models: dict[str, Path]) -> None:
    error = refused(start_server, sys.executable, tokenizer_path=str(tiny_models["embed"]))
    assert error.startswith(f"the tokenizer in {tiny_models['embed']} has no special token [gMASK], which ChatGLM3's prompt needs")
    assert "point tokenizer_path" in error


def test_chatglm2s_tokenizer_is_refused(start_server, pins_python: str, tiny_chatglm: Path, tmp_path: Path) -> None:
    """ChatGLM2's tokenizer (the real code, modelscope's copy) has [gMASK] and sop but none of ChatGLM3's role tokens."""
    folder = copy_checkpoint(tiny_chatglm, tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_chatglm2.ChatGLM2Tokenizer", None]}
    config["tokenizer_class"] = "ChatGLM2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    error = refused(start_server, pins_python, model_path=str(folder))
    assert error.startswith(f"the tokenizer in {folder} has no special token <|system|>")


# -- quantization: ChatGLM's own quantize() --------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_on_the_cpu_is_refused_at_load(start_server, pins_python: str, tiny_chatglm: Path, bits: int) -> None:
    error = refused(start_server, pins_python, model_path=str(tiny_chatglm), quantize=bits)
    assert error.startswith(f"quantize: {bits}: ChatGLM3's own quantize() (the checkpoint's quantization.py) needs CUDA")
    assert "this device is cpu" in error and "llama_cpp / chatglm_cpp" in error


def test_what_chatglms_quantization_code_does_on_the_cpu(pins_python: str, tiny_chatglm: Path) -> None:
    """The checkpoint's quantization.py (ChatGLM's own, modelscope's copy) on this CPU-only torch, step by step:
    int8 compression and an int8 layer in bfloat16 are plain torch and run; int4 compression and quantize() itself
    (which moves every weight to torch.cuda.current_device()) need CUDA — what docs/server.md says."""
    facts = direct(pins_python, tiny_chatglm, {"op": "quantize"})
    assert facts["kernels_loaded"] is False  # no cpm_kernels here
    assert facts["int8_weight_dtype"] == "torch.int8" and facts["int8_max_error_over_scale"] <= 0.5 + 1e-4
    assert facts["int8_forward_bfloat16"] == "ok"
    assert facts["int8_forward_float32"].startswith("AssertionError")  # its weight extraction takes half/bfloat16 scales only
    assert facts["int4_compress"] == "ValueError: Expected a cuda device, but got: cpu"
    assert facts["model_quantize_8"] == "AssertionError: Torch not compiled with CUDA enabled"
