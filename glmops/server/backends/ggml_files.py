"""Checks of the CPU engines' model files before an engine sees them, and ChatGLM3's prompt as token ids.

llama.cpp and chatglm.cpp report a damaged or foreign file as "failed to load" (or crash); these checks
name the file, the tensor, the shape found and the shape expected, and the command that makes a good file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from glmops.server.backends.base import BackendError
from glmops.server.prompt import Turn

GGUF_CONVERT = "python -m glmops.server.gguf_convert --type q4_0 -- MODEL_DIR chatglm3-6b-q4_0.gguf"
GGML_CONVERT = "python3 -m chatglm_cpp.convert -i MODEL_DIR -t q4_0 -o chatglm3-ggml.bin"
CHATGLM3_SPECIAL = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
GGML_MODEL_TYPES = {1: "ChatGLM-6B", 2: "ChatGLM2-6B", 3: "ChatGLM3-6B", 4: "GLM-4", 1004: "GLM-4V"}
# bytes per block and values per block of the GGML types chatglm.cpp's converter writes
GGML_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32)}


def _require_file(path: str, what: str, convert: str) -> None:
    if not os.path.isfile(path):
        raise BackendError(f"model_path {path} is not a file: the {what} backend loads one model file (make it with: {convert})")


def _shape_error(path: str, name: str, got: list[int], expected: list[int], hparams: str, convert: str) -> BackendError:
    return BackendError(f"{path}: tensor {name} has shape {got}, expected {expected} for {hparams}: the file is damaged or "
                        f"was converted from another model; convert the checkpoint again: {convert}")


# -- GGUF (llama.cpp) ---------------------------------------------------------------------------


def gguf_expected_shapes(n_embd: int, n_head: int, n_head_kv: int, n_ff: int, n_layer: int, n_vocab: int) -> dict[str, list[int]]:
    """llama.cpp's shapes (ne order: fastest dimension first) of a `chatglm` model's tensors."""
    head_dim = n_embd // n_head
    qkv = n_embd + 2 * n_head_kv * head_dim
    shapes = {"token_embd.weight": [n_embd, n_vocab], "output_norm.weight": [n_embd], "output.weight": [n_embd, n_vocab]}
    for i in range(n_layer):
        shapes.update({
            f"blk.{i}.attn_norm.weight": [n_embd], f"blk.{i}.attn_qkv.weight": [n_embd, qkv], f"blk.{i}.attn_qkv.bias": [qkv],
            f"blk.{i}.attn_output.weight": [n_embd, n_embd], f"blk.{i}.ffn_norm.weight": [n_embd],
            f"blk.{i}.ffn_up.weight": [n_embd, 2 * n_ff], f"blk.{i}.ffn_down.weight": [n_ff, n_embd],
        })
    return shapes


def check_gguf(path: str) -> dict[str, Any]:
    """A clear error unless `path` is a GGUF file of a ChatGLM3 model with ChatGLM3's tokenizer; returns its facts."""
    _require_file(path, "llama_cpp", GGUF_CONVERT)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        hint = " (it is a chatglm.cpp GGML file: serve it with backend: chatglm_cpp)" if magic == b"ggml" else ""
        raise BackendError(f"{path} is not a GGUF file: it starts with {magic!r}, not b'GGUF'{hint}; make one with: {GGUF_CONVERT}")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise BackendError("the llama_cpp backend needs the gguf package to check model files: pip install 'glmops[cpu]' (or pip install gguf)") from None
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, struct.error) as exc:
        raise BackendError(f"{path} is not a readable GGUF file ({exc}); convert the checkpoint again: {GGUF_CONVERT}") from None

    def value(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = value("general.architecture")
    if arch != "chatglm":
        raise BackendError(f"{path} is a GGUF file of architecture {arch!r}, not 'chatglm' (ChatGLM3); convert ChatGLM3-6B with: {GGUF_CONVERT}")
    tokens = value("tokenizer.ggml.tokens") or []
    model = value("tokenizer.ggml.model")
    missing = [t for t in CHATGLM3_SPECIAL if t not in tokens]
    if model != "llama" or missing:
        raise BackendError(f"{path} has a {model!r} tokenizer{' without ' + ', '.join(missing) if missing else ''}, not ChatGLM3's "
                           f"sentencepiece tokenizer; convert the checkpoint with: {GGUF_CONVERT} (llama.cpp's convert_hf_to_gguf.py "
                           "takes ChatGLM3's tokenizer only when config.json's _name_or_path contains 'THUDM/chatglm3-6b': docs/server.md)")
    hparams = {key: value(f"chatglm.{key}") for key in ("embedding_length", "attention.head_count", "attention.head_count_kv",
                                                        "feed_forward_length", "block_count", "context_length")}
    absent = [key for key, found in hparams.items() if found is None]
    if absent:
        raise BackendError(f"{path} lacks the metadata chatglm.{', chatglm.'.join(absent)}; convert the checkpoint again: {GGUF_CONVERT}")
    n_embd, n_head, n_kv, n_ff, n_layer = (int(hparams[k]) for k in ("embedding_length", "attention.head_count", "attention.head_count_kv",
                                                                     "feed_forward_length", "block_count"))
    expected = gguf_expected_shapes(n_embd, n_head, n_kv, n_ff, n_layer, len(tokens))
    found = {tensor.name: ([int(d) for d in tensor.shape], tensor.tensor_type.name) for tensor in reader.tensors}
    described = f"hidden {n_embd}, {n_head} heads, {n_kv} kv groups, ffn {n_ff}, vocab {len(tokens)}"
    for name, shape in expected.items():
        if name == "output.weight" and name not in found:
            continue  # llama.cpp ties it to token_embd
        if name not in found:
            raise BackendError(f"{path}: tensor {name} is missing; convert the checkpoint again: {GGUF_CONVERT}")
        if found[name][0] != shape:
            raise _shape_error(path, name, found[name][0], shape, described, GGUF_CONVERT)
    return {"context_length": int(hparams["context_length"]), "vocab": len(tokens), "dtype": found["token_embd.weight"][1].lower(),
            "longest_token": max((len(str(t).encode()) for t in tokens), default=16)}


# -- GGML (chatglm.cpp) -------------------------------------------------------------------------


def ggml_expected_shapes(hidden: int, heads: int, kv_heads: int, layers: int, ffn: int, vocab: int) -> dict[str, list[int]]:
    """chatglm.cpp's ChatGLM3 tensors in PyTorch's [out, in] order, as its convert.py writes them."""
    qkv = hidden + 2 * kv_heads * (hidden // heads)
    shapes = {"transformer.embedding.word_embeddings.weight": [vocab, hidden]}
    for i in range(layers):
        layer = f"transformer.encoder.layers.{i}"
        shapes.update({
            f"{layer}.input_layernorm.weight": [hidden], f"{layer}.self_attention.query_key_value.weight": [qkv, hidden],
            f"{layer}.self_attention.query_key_value.bias": [qkv], f"{layer}.self_attention.dense.weight": [hidden, hidden],
            f"{layer}.post_attention_layernorm.weight": [hidden], f"{layer}.mlp.dense_h_to_4h.weight": [2 * ffn, hidden],
            f"{layer}.mlp.dense_4h_to_h.weight": [hidden, ffn],
        })
    shapes.update({"transformer.encoder.final_layernorm.weight": [hidden], "transformer.output_layer.weight": [vocab, hidden]})
    return shapes


def _read(handle: BinaryIO, fmt: str, path: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise BackendError(f"{path} is truncated (it ends inside its header); copy or convert it again: {GGML_CONVERT}")
    return struct.unpack(fmt, data)


def check_ggml_file(path: str) -> dict[str, Any]:
    """A clear error unless `path` is a whole chatglm.cpp GGML file of ChatGLM3 with the shapes its config says."""
    _require_file(path, "chatglm_cpp", GGML_CONVERT)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if magic != b"ggml":
            hint = "; it is a GGUF file: serve it with backend: llama_cpp" if magic == b"GGUF" else ""
            raise BackendError(f"{path} is not a chatglm.cpp GGML file (it starts with {magic!r}, not b'ggml'){hint}; "
                               f"convert the checkpoint: {GGML_CONVERT}")
        model_type, version = _read(handle, "ii", path)
        if model_type != 3:
            name = GGML_MODEL_TYPES.get(model_type, f"model type {model_type}")
            raise BackendError(f"{path} is a {name} file, not ChatGLM3 (model type 3); convert ChatGLM3-6B: {GGML_CONVERT}")
        if version != 2:
            raise BackendError(f"{path} is a version {version} chatglm.cpp file; chatglm-cpp 0.4.2's converter writes version 2: "
                               f"convert the checkpoint again: {GGML_CONVERT}")
        (dtype, vocab, hidden, heads, kv_heads, layers, ffn, _eps, _pre_seq, _theta, max_length, _eos, _pad) = _read(handle, "iiiiiiififiii", path)
        (proto_size,) = _read(handle, "i", path)
        handle.seek(proto_size, os.SEEK_CUR)
        expected = ggml_expected_shapes(hidden, heads, kv_heads, layers, ffn, vocab)
        described = f"hidden {hidden}, {heads} heads, {kv_heads} kv groups, ffn {ffn}, vocab {vocab}"
        seen: set[str] = set()
        while handle.tell() < size:
            (name_size,) = _read(handle, "i", path)
            name = handle.read(name_size).decode("utf-8", "replace")
            (ndim,) = _read(handle, "i", path)
            dims = list(_read(handle, "i" * ndim, path))
            (kind,) = _read(handle, "i", path)
            if name in expected and dims != expected[name]:
                raise _shape_error(path, name, dims, expected[name], described, GGML_CONVERT)
            if kind not in GGML_TYPE_SIZES:
                raise BackendError(f"{path}: tensor {name} has GGML type {kind}, which chatglm.cpp does not read; convert again: {GGML_CONVERT}")
            block_bytes, block_values = GGML_TYPE_SIZES[kind]
            count = 1
            for dim in dims:
                count *= dim
            handle.seek((handle.tell() + 15) // 16 * 16 + count // block_values * block_bytes)
            if handle.tell() > size:
                raise BackendError(f"{path} is truncated (tensor {name} ends past the end of the file); copy or convert it again: {GGML_CONVERT}")
            seen.add(name)
    absent = [name for name in expected if name not in seen]
    if absent:
        raise BackendError(f"{path}: tensor {absent[0]} is missing; convert the checkpoint again: {GGML_CONVERT}")
    return {"version": version, "dtype": {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0"}.get(dtype, str(dtype)),
            "vocab": vocab, "max_length": max_length}


# -- the prompt as ids --------------------------------------------------------------------------


def turn_content(turn: Turn) -> str:
    """A turn's text after its `{metadata}\\n` line (a system turn carries the tools as indented JSON)."""
    if turn.role == "system" and turn.tools:
        return turn.content + "\n" + json.dumps(turn.tools, indent=4, ensure_ascii=False)
    return turn.content


def chatglm3_prompt_ids(turns: list[Turn], text_ids: Callable[[str], list[int]], special_id: Callable[[str], int], prefix: str = "") -> list[int]:
    """The ids ChatGLM3's own tokenizer (build_chat_input) gives: [gMASK] sop, then per turn its role token,
    "{metadata}\\n" and the content as separately encoded texts (each with sentencepiece's dummy prefix),
    then <|assistant|> (and `prefix`, the forced start of the answer). Client text is never read as special tokens."""
    ids = [special_id("[gMASK]"), special_id("sop")]
    for turn in turns:
        ids.append(special_id(f"<|{turn.role}|>"))
        ids += text_ids(f"{turn.metadata}\n")
        content = turn_content(turn)
        if content:
            ids += text_ids(content)
    ids.append(special_id("<|assistant|>"))
    if prefix:
        ids += text_ids(prefix)
    return ids
