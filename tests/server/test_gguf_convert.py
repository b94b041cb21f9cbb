"""glmops.server.gguf_convert: a ChatGLM3 checkpoint folder (made by scripts/make_tiny_ggml.py --hf, the
same weights as its directly written GGUF) to GGUF, then served by the real llama.cpp through glmops serve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
from gguf import GGUFReader

from glmops.server.backends.ggml_files import check_gguf

from .conftest import ROOT, ServerProcess


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ChatGLM3 as a checkpoint folder and as make_tiny_ggml's own f32 GGUF of the same weights."""
    out = tmp_path_factory.mktemp("tiny-hf")
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_ggml.py"), str(out), "--dtype", "f32", "--hf"],
                          capture_output=True, text=True, check=True).stdout.split()
    return {"gguf": Path(made[0]), "hf": Path(made[3])}


def convert(model_dir: Path, out: Path, kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "glmops.server.gguf_convert", "--type", kind, "--", str(model_dir), str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)


def tensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in GGUFReader(str(path)).tensors}


def metadata(path: Path) -> dict[str, object]:
    return {key: field.contents() for key, field in GGUFReader(str(path)).fields.items() if key != "general.name"}


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def assert_same_model(converted: Path, direct: Path) -> None:
    ours, theirs = tensors(converted), tensors(direct)
    assert sorted(ours) == sorted(theirs)
    for name, (kind, data) in theirs.items():
        assert ours[name][0] == kind, name
        assert np.array_equal(ours[name][1], data), name
    assert metadata(converted) == metadata(direct)


def test_a_checkpoint_converts_to_the_same_file_both_engines_agree_on(tiny, tmp_path: Path) -> None:
    done = convert(tiny["hf"], tmp_path / "out.gguf", "f32")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "[17/17]" in done.stdout  # progress per tensor
    assert_same_model(tmp_path / "out.gguf", tiny["gguf"])
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]  # no temporary file left


def test_the_checkpoint_in_chatglm3s_own_format_converts_to_the_same_file(tiny, tiny_chatglm: Path, tmp_path: Path) -> None:
    """scripts/make_tiny_chatglm.py's folder: the remote code beside the weights, config.json's auto_map and the other keys
    of ChatGLM3-6B's config, and the rotary inv_freq buffer among the tensors (llama.cpp recomputes it: not written)."""
    done = convert(tiny_chatglm, tmp_path / "out.gguf", "f32")
    assert done.returncode == 0, done.stderr
    assert "[17/17]" in done.stdout and "inv_freq" not in done.stdout
    assert_same_model(tmp_path / "out.gguf", tiny["gguf"])


def test_pytorch_bin_weights_convert_the_same(tiny, tmp_path: Path) -> None:
    import torch
    from safetensors.numpy import load_file

    model = copy_checkpoint(tiny["hf"], tmp_path / "bin-model")
    weights = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    torch.save({name: torch.from_numpy(array).to(torch.float16) for name, array in weights.items()}, model / "pytorch_model.bin")
    done = convert(model, tmp_path / "out.gguf", "f16")
    assert done.returncode == 0, done.stderr
    converted = tensors(tmp_path / "out.gguf")
    assert converted["blk.0.attn_qkv.weight"][0] == "F16" and converted["blk.0.attn_qkv.bias"][0] == "F32"  # norms and biases stay f32
    assert np.array_equal(converted["output.weight"][1], weights["transformer.output_layer.weight"].astype(np.float16))


def test_a_quantized_conversion_serves_chat(tiny, tmp_path: Path) -> None:
    done = convert(tiny["hf"], tmp_path / "chatglm3-q4_0.gguf", "q4_0")
    assert done.returncode == 0, done.stderr
    assert "quantizing to q4_0" in done.stdout
    assert check_gguf(str(tmp_path / "chatglm3-q4_0.gguf"))["dtype"] == "q4_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chatglm3-q4_0.gguf"]  # the f16 intermediate is gone
    server = ServerProcess({"backend": "llama_cpp", "model_path": str(tmp_path / "chatglm3-q4_0.gguf"), "max_context": 512}, tmp_path).wait_healthy(120)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}], max_tokens=8, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    finally:
        server.proc.terminate()
        server.proc.wait(30)


def test_what_is_not_a_chatglm3_checkpoint_is_refused_clearly(tiny, tmp_path: Path) -> None:
    def refused(model: Path, message: str, kind: str = "q4_0") -> None:
        out = tmp_path / f"out-{model.name}.gguf"
        done = convert(model, out, kind)
        assert done.returncode == 2, done.stdout + done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not out.exists() and not list(tmp_path.glob("*.tmp"))

    llama = copy_checkpoint(tiny["hf"], tmp_path / "llama")
    (llama / "config.json").write_text(json.dumps({**json.loads((llama / "config.json").read_text()), "model_type": "llama"}))
    refused(llama, f"{llama}/config.json: model_type is 'llama', not 'chatglm'")

    wrong = copy_checkpoint(tiny["hf"], tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps({**json.loads((wrong / "config.json").read_text()), "ffn_hidden_size": 96}))
    refused(wrong, "model.safetensors: tensor transformer.encoder.layers.0.mlp.dense_4h_to_h.weight has shape [64, 128], expected [64, 96] from config.json")

    no_tokenizer = copy_checkpoint(tiny["hf"], tmp_path / "no-tokenizer")
    (no_tokenizer / "tokenizer.model").unlink()
    refused(no_tokenizer, "tokenizer.model does not exist")

    truncated = copy_checkpoint(tiny["hf"], tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    refused(truncated, "model.safetensors is not a readable safetensors file")

    no_weights = copy_checkpoint(tiny["hf"], tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    refused(no_weights, "has no weights (*.safetensors or pytorch_model*.bin)")
