#!/usr/bin/env python3
"""Make, offline, a ChatGLM3-architecture model with random weights for the CPU backends.

    python scripts/make_tiny_ggml.py OUT_DIR [--shape tiny|6b] [--dtype q4_0|f32] [--seed N] [--hf]

writes OUT_DIR/chatglm3-{shape}.gguf (llama.cpp, arch `chatglm`), OUT_DIR/chatglm3-{shape}-ggml.bin
(chatglm.cpp, model type 3 = ChatGLM3) and OUT_DIR/tokenizer.model, all with the SAME weights and
tokenizer, so both engines must produce the same greedy tokens; with --hf also the checkpoint folder
OUT_DIR/chatglm3-{shape}-hf (what ModelScope serves, in float32) for glmops.server.gguf_convert.

The tokenizer is a sentencepiece BPE model trained here (byte fallback, unk/bos/eos = 0/1/2); ChatGLM3's
9 special tokens follow the pieces ([MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|>
<|observation|>), and the vocabulary is exactly pieces + 9. `--shape 6b` gives ChatGLM3-6B's real
shapes (3.5 GB in q4_0, for bench/cpu_backends.py) with the same small tokenizer's ids padded to
65024 rows. Needs numpy, sentencepiece, gguf (and safetensors for --hf); no torch, no download, deterministic.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from make_tiny_models import CORPUS  # the same sentences train both tiny tokenizers (scripts/ is on sys.path)

from glmops.server.backends.ggml_files import CHATGLM3_SPECIAL as SPECIAL

GGML_TYPES = {"f32": 0, "q4_0": 2}  # chatglm.cpp's GGMLType values
QK4_0 = 32


@dataclass
class Shape:
    """ChatGLM3's hyperparameters (config.json names in comments)."""

    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_groups: int  # multi_query_group_num
    layers: int  # num_layers
    ffn: int  # ffn_hidden_size
    seq_length: int  # seq_length
    vocab: int = 0  # padded_vocab_size: set from the tokenizer (tiny) or 65024 (6b)
    used: int = 0  # ids the tokenizer has: pieces + the 9 special tokens
    eps: float = 1e-5
    never: tuple[int, ...] = ()  # ids greedy decoding must never pick (their output rows are zero)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def qkv_rows(self) -> int:
        return self.hidden + 2 * self.kv_groups * self.head_dim


SHAPES = {
    "tiny": Shape(hidden=64, heads=4, kv_groups=2, layers=2, ffn=128, seq_length=8192),
    "6b": Shape(hidden=4096, heads=32, kv_groups=2, layers=28, ffn=13696, seq_length=8192, vocab=65024),
}


def train_tokenizer(pieces: int = 400) -> bytes:
    """A sentencepiece BPE model: byte fallback, unk/bos/eos = 0/1/2, no normalisation (so llama.cpp's
    SPM tokenizer, which does not normalise, encodes exactly as sentencepiece does)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=model, vocab_size=pieces, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def tensors(shape: Shape, seed: int, direct_q4_0: bool = False) -> Iterator[tuple[str, list[int], Any]]:
    """(HF name, HF's [out, in] dims, float32 array), in chatglm.cpp's order. Large enough weights that the
    logits of the top tokens are far apart: both engines then pick the same greedy token. Output rows
    past the tokenizer's ids (6b's padding) and `shape.never` are zero: greedy decoding never picks them, so a
    benchmark decodes as many tokens as it asks, each one whole text.
    `direct_q4_0`: matrices come as random q4_0 bytes (rows x bytes, uint8), fast enough for 6b."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def normal(rows: int, cols: int, std: float) -> Any:
        if direct_q4_0:
            blocks = rows * cols // QK4_0
            scales = np.full(blocks, std / 4.6, dtype=np.float16)  # nibbles uniform in 0..15: std of (q - 8) is ~4.6
            nibbles = rng.integers(0, 256, (blocks, 16), dtype=np.uint8)
            return np.concatenate([scales[:, None].view(np.uint8), nibbles], axis=1).reshape(rows, cols // QK4_0 * 18)
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)

    def ones_ish(size: int) -> Any:
        return (1.0 + 0.1 * rng.standard_normal(size, dtype=np.float32)).astype(np.float32)

    scale = shape.hidden ** -0.5
    yield "transformer.embedding.word_embeddings.weight", [shape.vocab, shape.hidden], normal(shape.vocab, shape.hidden, 1.0)
    for i in range(shape.layers):
        layer = f"transformer.encoder.layers.{i}"
        yield f"{layer}.input_layernorm.weight", [shape.hidden], ones_ish(shape.hidden)
        yield f"{layer}.self_attention.query_key_value.weight", [shape.qkv_rows, shape.hidden], normal(shape.qkv_rows, shape.hidden, 2 * scale)
        yield f"{layer}.self_attention.query_key_value.bias", [shape.qkv_rows], 0.1 * rng.standard_normal(shape.qkv_rows, dtype=np.float32)
        yield f"{layer}.self_attention.dense.weight", [shape.hidden, shape.hidden], normal(shape.hidden, shape.hidden, scale)
        yield f"{layer}.post_attention_layernorm.weight", [shape.hidden], ones_ish(shape.hidden)
        yield f"{layer}.mlp.dense_h_to_4h.weight", [2 * shape.ffn, shape.hidden], normal(2 * shape.ffn, shape.hidden, 2 * scale)
        yield f"{layer}.mlp.dense_4h_to_h.weight", [shape.hidden, shape.ffn], normal(shape.hidden, shape.ffn, shape.ffn ** -0.5)
    yield "transformer.encoder.final_layernorm.weight", [shape.hidden], ones_ish(shape.hidden)
    output = normal(shape.vocab, shape.hidden, 1.0)
    output[shape.used:] = 0  # all-zero q4_0 blocks are zeros too
    if shape.never:
        output[list(shape.never)] = 0
    yield "transformer.output_layer.weight", [shape.vocab, shape.hidden], output


def quantize_q4_0(array: Any) -> Any:
    """ggml's q4_0: blocks of 32 values -> fp16 scale + 16 bytes of nibbles; returns rows x bytes."""
    import numpy as np

    rows, cols = array.shape
    blocks = array.reshape(-1, QK4_0)
    index = np.abs(blocks).argmax(axis=1)
    maxima = blocks[np.arange(len(blocks)), index]
    scale = maxima / -8.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    quants = np.clip((blocks * inverse[:, None] + 8.5).astype(np.int8), 0, 15).astype(np.uint8)
    packed = quants[:, :16] | (quants[:, 16:] << 4)
    out = np.concatenate([scale.astype(np.float16)[:, None].view(np.uint8), packed], axis=1)
    return out.reshape(rows, cols // QK4_0 * 18)


def stored(name: str, array: Any, dtype: str) -> tuple[Any, int]:
    """(data, chatglm.cpp GGMLType): matrices in `dtype`, norms and biases always f32 (as convert.py)."""
    if array.dtype.name == "uint8":  # already q4_0 bytes
        return array, GGML_TYPES["q4_0"]
    if dtype == "q4_0" and array.ndim == 2:
        return quantize_q4_0(array), GGML_TYPES["q4_0"]
    return array, GGML_TYPES["f32"]


def chatglm3_config(shape: Shape) -> Any:
    from glmops.server.gguf_convert import ChatGLM3Config

    return ChatGLM3Config(hidden=shape.hidden, heads=shape.heads, kv_groups=shape.kv_groups, layers=shape.layers, ffn=shape.ffn,
                          seq_length=shape.seq_length, vocab=shape.vocab, eps=shape.eps)


def write_gguf(path: Path, shape: Shape, sp_model: bytes, dtype: str, seed: int) -> None:
    """With glmops's GGUF writer (glmops.server.gguf_convert), as a converted checkpoint is written."""
    from glmops.server.gguf_convert import TensorSpec, gguf_name
    from glmops.server.gguf_convert import write_gguf as write

    direct = dtype == "q4_0" and shape.vocab > shape.used
    second_pass: Iterator[Any] | None = None  # tensors() again for the data, in order: a 6b model never sits in memory whole

    def next_data() -> Any:
        nonlocal second_pass
        if second_pass is None:
            second_pass = (stored(name, array, dtype)[0] for name, _, array in tensors(shape, seed, direct))
        return next(second_pass)

    specs = []
    for name, _, array in tensors(shape, seed, direct):
        data, kind = stored(name, array, dtype)
        specs.append(TensorSpec(gguf_name(name) or name, tuple(data.shape), data.dtype.name,
                                "Q4_0" if kind == GGML_TYPES["q4_0"] else "F32", next_data))
    write(path, chatglm3_config(shape), sp_model, specs, "MOSTLY_Q4_0" if dtype == "q4_0" else "ALL_F32",
          "ChatGLM3 random weights (glmops test model)")


def write_hf(out: Path, shape: Shape, sp_model: bytes, seed: int) -> None:
    """The same weights as a ChatGLM3 checkpoint folder (config.json, tokenizer.model, model.safetensors in
    float32), for glmops.server.gguf_convert."""
    import json

    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = {"_name_or_path": "glmops/tiny-chatglm3", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
              "hidden_size": shape.hidden, "num_attention_heads": shape.heads, "multi_query_attention": True,
              "multi_query_group_num": shape.kv_groups, "num_layers": shape.layers, "ffn_hidden_size": shape.ffn,
              "seq_length": shape.seq_length, "padded_vocab_size": shape.vocab, "layernorm_epsilon": shape.eps,
              "kv_channels": shape.head_dim, "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "tokenizer.model").write_bytes(sp_model)
    save_file({name: array for name, _, array in tensors(shape, seed)}, str(out / "model.safetensors"))


def write_ggml(path: Path, shape: Shape, sp_model: bytes, dtype: str, seed: int) -> None:
    """chatglm.cpp's format (its convert.py, ChatGLM3Converter): magic, model type 3, config version 2 and its
    13 fields, the length-prefixed sentencepiece model, then each tensor (name, dims, type, data at 16-byte alignment)."""
    with open(path, "wb") as handle:
        handle.write(b"ggml")
        handle.write(struct.pack("i", 3))
        handle.write(struct.pack("iiiiiiiififiii", 2, GGML_TYPES[dtype], shape.vocab, shape.hidden, shape.heads, shape.kv_groups,
                                 shape.layers, shape.ffn, shape.eps, 0, 10000.0, shape.seq_length, 2, 0))
        handle.write(struct.pack("i", len(sp_model)))
        handle.write(sp_model)
        for name, dims, array in tensors(shape, seed, dtype == "q4_0" and shape.vocab > shape.used):
            data, kind = stored(name, array, dtype)
            write_ggml_tensor(handle, name, dims, kind, data)


def write_ggml_tensor(handle: BinaryIO, name: str, dims: list[int], kind: int, data: Any) -> None:
    encoded = name.encode()
    handle.write(struct.pack("i", len(encoded)) + encoded)
    handle.write(struct.pack("i" * (2 + len(dims)), len(dims), *dims, kind))
    handle.seek((handle.tell() + 15) // 16 * 16)
    data.tofile(handle)


def make(out: Path, shape_name: str = "tiny", dtype: str = "q4_0", seed: int = 0, hf: bool = False) -> dict[str, Path]:
    """Write the three files, and with `hf` the checkpoint folder (skipped when they exist); returns their paths."""
    shape = SHAPES[shape_name]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"gguf": out / f"chatglm3-{shape_name}.gguf", "ggml": out / f"chatglm3-{shape_name}-ggml.bin", "tokenizer": out / "tokenizer.model"}
    if hf:
        paths["hf"] = out / f"chatglm3-{shape_name}-hf"
    if all(path.exists() for path in paths.values()):
        return paths
    sp_model = train_tokenizer()
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    used = pieces + len(SPECIAL)
    never: tuple[int, ...] = ()
    if shape.vocab:  # 6b, for benchmarks: never unk/bos/eos or a special token (the full length is decoded) nor a
        sp = spm.SentencePieceProcessor(model_proto=sp_model)  # byte (each token is whole text: streamed chunks time it)
        never = (0, 1, 2, *range(pieces, used), *(i for i in range(pieces) if sp.is_byte(i)))
    shape = Shape(**{**shape.__dict__, "vocab": shape.vocab or used, "used": used, "never": never})
    paths["tokenizer"].write_bytes(sp_model)
    write_gguf(paths["gguf"], shape, sp_model, dtype, seed)
    write_ggml(paths["ggml"], shape, sp_model, dtype, seed)
    if hf:
        write_hf(paths["hf"], shape, sp_model, seed)
    return paths


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", choices=sorted(GGML_TYPES), default="q4_0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf", action="store_true", help="also the checkpoint folder (float32 safetensors) for the GGUF converter")
    args = parser.parse_args(argv)
    for path in make(args.out, args.shape, args.dtype, args.seed, args.hf).values():
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
