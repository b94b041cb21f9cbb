"""The CPU backends end to end: llama_cpp (GGUF) and chatglm_cpp (GGML) on a tiny ChatGLM3 made by
scripts/make_tiny_ggml.py, with the real engines, the real server process and the official openai client."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import sentencepiece

from glmops.server.backends.base import BackendError
from glmops.server.backends.ggml_files import check_ggml_file, check_gguf
from glmops.server.config import ServerConfig

from .conftest import ROOT, ServerProcess

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "system", "content": "You are ChatGLM3. Respond using markdown."}, {"role": "user", "content": "你好，给我讲一个故事 <|user|>"}]
TOOL_MESSAGES = [
    {"role": "user", "content": "北京天气？"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"weather": "sunny"}'},
]
BACKENDS = {"llama_cpp": "gguf", "chatglm_cpp": "ggml"}

# Runs in a fresh interpreter per engine: each engine carries its own copy of ggml.
PROBE = r"""
import json, sys, threading
from glmops.server.backends import get_backend
from glmops.server.backends.base import GenerationParams
from glmops.server.config import ServerConfig
from glmops.server.prompt import to_turns
backend_name, model_path, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
backend = get_backend(ServerConfig(model_path=model_path, backend=backend_name, max_context=512))
backend.load()
out = {"prompts": [], "greedy": [], "native": None}
for messages, tools in requests:
    turns = to_turns(messages, tools)
    ids = backend.prompt_ids(turns)
    out["prompts"].append(ids)
    with backend.lock:
        out["greedy"].append(list(backend.token_ids(ids, GenerationParams(max_tokens=24, temperature=0), threading.Event(), 24)))
if backend_name == "chatglm_cpp":  # the engine's own chat template, for messages without tool metadata
    import chatglm_cpp
    native = [chatglm_cpp.ChatMessage(role=m["role"], content=m["content"]) for m in requests[0][0]]
    out["native"] = list(backend.pipeline.tokenizer.apply_chat_template(native, 512))
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def cpu_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """q4_0 files (what CPU boxes serve), and f32 files of the same weights for the exact cross-engine comparison:
    in q4_0 the two engines' kernels round differently enough that a near-tie between two logits can flip."""
    out = tmp_path_factory.mktemp("cpu-models")
    models: dict[str, Path] = {}
    for dtype, suffix in (("q4_0", ""), ("f32", "_f32")):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_ggml.py"), str(out / dtype), "--dtype", dtype],
                                capture_output=True, text=True, check=True)
        gguf, ggml, tokenizer = (Path(line) for line in result.stdout.split())
        models.update({f"gguf{suffix}": gguf, f"ggml{suffix}": ggml, "tokenizer": tokenizer})
    return models


@pytest.fixture(scope="session")
def probes(cpu_models: dict[str, Path]) -> dict[str, dict]:
    requests = json.dumps([[MESSAGES, None], [TOOL_MESSAGES, TOOLS]])
    results = {}
    for backend, kind in BACKENDS.items():
        done = subprocess.run([sys.executable, "-c", PROBE, backend, str(cpu_models[kind + "_f32"]), requests], capture_output=True, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def expected_ids(tokenizer: Path, turns: list[tuple[str, str, str]]) -> list[int]:
    """ChatGLM3's build_chat_input, from the sentencepiece model itself: specials numbered after the pieces."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
    base = sp.get_piece_size()
    special = {name: base + i for i, name in enumerate(["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"])}
    ids = [special["[gMASK]"], special["sop"]]
    for role, metadata, content in turns:
        ids += [special[f"<|{role}|>"]] + sp.encode(f"{metadata}\n") + sp.encode(content)
    return ids + [special["<|assistant|>"]]


def test_both_backends_load_and_build_chatglm3_prompt_ids(probes, cpu_models) -> None:
    tools_json = json.dumps([t["function"] for t in TOOLS], indent=4, ensure_ascii=False)
    plain = expected_ids(cpu_models["tokenizer"], [("system", "", MESSAGES[0]["content"]), ("user", "", MESSAGES[1]["content"])])
    with_tools = expected_ids(cpu_models["tokenizer"], [
        ("system", "", "Answer the following questions as best as you can. You have access to the following tools:\n" + tools_json),
        ("user", "", "北京天气？"),
        ("assistant", "get_weather", '```python\ntool_call(city="北京")\n```'),
        ("observation", "", '{"weather": "sunny"}'),
    ])
    for backend in BACKENDS:
        assert probes[backend]["prompts"] == [plain, with_tools], backend
    # the user's "<|user|>" stayed text, and chatglm.cpp's own template gives the same ids
    assert plain.count(plain[-1] - 1) == 1
    assert probes["chatglm_cpp"]["native"] == plain


def test_greedy_ids_agree_across_the_two_engines(probes) -> None:
    for index in range(2):
        llama, chatglm = probes["llama_cpp"]["greedy"][index], probes["chatglm_cpp"]["greedy"][index]
        assert len(llama) >= 4 and llama == chatglm


@pytest.fixture(scope="module")
def cpu_servers(cpu_models, tmp_path_factory: pytest.TempPathFactory):
    servers = {backend: ServerProcess({"backend": backend, "model_path": str(cpu_models[kind]), "max_tokens": 16, "max_context": 1024},
                                      tmp_path_factory.mktemp(backend)) for backend, kind in BACKENDS.items()}
    try:
        yield {backend: server.wait_healthy() for backend, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_chat_and_streaming_through_glmops_serve(cpu_servers, cpu_models, backend: str) -> None:
    server = cpu_servers[backend]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["backend"] == backend and health["device"] == "cpu" and health["dtype"] == "q4_0"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["chatglm3-6b"]
    reply = client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=12, temperature=0)
    prompt = expected_ids(cpu_models["tokenizer"], [("system", "", MESSAGES[0]["content"]), ("user", "", MESSAGES[1]["content"])])
    assert reply.usage.prompt_tokens == len(prompt)
    assert 0 < reply.usage.completion_tokens <= 12 and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.content and reply.usage.total_tokens == len(prompt) + reply.usage.completion_tokens
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=12, temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == reply.choices[0].message.content and finish == reply.choices[0].finish_reason
    sampled = client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=8, temperature=0.9, top_p=0.9)
    assert sampled.usage.completion_tokens <= 8
    tools = client.chat.completions.create(model="chatglm3-6b", messages=TOOL_MESSAGES, tools=TOOLS, max_tokens=8, temperature=0)
    assert tools.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_both_servers_answer_the_same_greedy_text(cpu_servers) -> None:
    answers = set()
    for server in cpu_servers.values():
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        answers.add(client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=16, temperature=0).choices[0].message.content)
    assert len(answers) == 1


def patched(source: Path, target: Path, name: bytes, dim_format: str, header: str) -> Path:
    """A copy of a model file whose tensor `name` claims a first dimension of 32 instead of 64."""
    data = bytearray(source.read_bytes())
    at = data.index(name) + len(name) + struct.calcsize(header)
    (dim,) = struct.unpack_from(dim_format, data, at)
    assert dim == 64
    struct.pack_into(dim_format, data, at, 32)
    target.write_bytes(bytes(data))
    return target


def test_bad_magic_and_wrong_tensor_shapes_are_refused_clearly(cpu_models, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"is not a GGUF file: it starts with b'ggml'.*backend: chatglm_cpp"):
        check_gguf(str(cpu_models["ggml"]))
    with pytest.raises(BackendError, match=r"not a chatglm.cpp GGML file \(it starts with b'GGUF', not b'ggml'\); it is a GGUF file: serve it with backend: llama_cpp"):
        check_ggml_file(str(cpu_models["gguf"]))
    gguf = patched(cpu_models["gguf"], tmp_path / "bad.gguf", b"blk.0.attn_output.weight", "<Q", "<I")
    with pytest.raises(BackendError, match=r"bad.gguf: tensor blk.0.attn_output.weight has shape \[32, 64\], expected \[64, 64\].*glmops.server.gguf_convert"):
        check_gguf(str(gguf))
    ggml = patched(cpu_models["ggml"], tmp_path / "bad-ggml.bin", b"layers.0.self_attention.dense.weight", "<i", "<i")
    with pytest.raises(BackendError, match=r"bad-ggml.bin: tensor transformer.encoder.layers.0.self_attention.dense.weight has shape \[32, 64\], expected \[64, 64\].*chatglm_cpp.convert"):
        check_ggml_file(str(ggml))
    truncated = tmp_path / "truncated-ggml.bin"
    truncated.write_bytes(cpu_models["ggml"].read_bytes()[:-100])
    with pytest.raises(BackendError, match="is truncated"):
        check_ggml_file(str(truncated))


def test_a_bad_file_is_reported_by_health_not_a_crash(tmp_path: Path, cpu_models) -> None:
    bad = patched(cpu_models["gguf"], tmp_path / "bad.gguf", b"blk.0.attn_output.weight", "<Q", "<I")
    server = ServerProcess({"backend": "llama_cpp", "model_path": str(bad)}, tmp_path)
    try:
        for _ in range(600):
            try:
                response = httpx.get(server.url + "/health", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if response.json()["status"] == "error":
                break
            time.sleep(0.1)
        assert response.status_code == 503 and "tensor blk.0.attn_output.weight has shape [32, 64]" in response.json()["error"]
        chat = httpx.post(server.url + "/v1/chat/completions", json={"model": "chatglm3-6b", "messages": MESSAGES})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_load_failed"
    finally:
        server.stop()


def test_config_knows_the_cpu_backends(tmp_path: Path) -> None:
    from glmops.server.config import load_config

    path = tmp_path / "api_server.yaml"
    path.write_text("model_path: /m/chatglm3.gguf\nbackend: llama_cpp\nthreads: 2\n")
    config = load_config(str(path), environ={})
    assert isinstance(config, ServerConfig) and (config.backend, config.threads) == ("llama_cpp", 2)


def test_llama_cpp_seeds_are_reproducible_across_the_range(cpu_servers) -> None:
    """Every seed the API accepts (a signed 64-bit integer) samples the same answer twice; -1 and 2**32-1 are
    llama.cpp's own "random seed" once wrapped into its 32 bits, and must not mean that here."""
    client = openai.OpenAI(base_url=cpu_servers["llama_cpp"].url + "/v1", api_key="none", max_retries=0)
    for seed in (-1, 2**32 - 1, 2**63 - 1, -(2**63), 7):
        answers = {client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=16, temperature=2.0, top_p=1.0,
                                                  seed=seed).choices[0].message.content for _ in range(3)}
        assert len(answers) == 1, (seed, answers)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=2, seed=2**63)
    assert caught.value.body["param"] == "seed"
