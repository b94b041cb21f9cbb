#!/usr/bin/env python3
"""Make, offline, a ChatGLM3-architecture model with random weights for the CPU backends.

    python scripts/make_tiny_ggml.py OUT_DIR [--shape tiny|6b] [--dtype q4_0|f32] [--seed N]

writes OUT_DIR/chatglm3-{shape}.gguf (llama.cpp, arch `chatglm`), OUT_DIR/chatglm3-{shape}-ggml.bin
(chatglm.cpp, model type 3 = ChatGLM3) and OUT_DIR/tokenizer.model, all with the SAME weights and
tokenizer, so both engines must produce the same greedy tokens.

The tokenizer is a sentencepiece BPE model trained here (byte fallback, unk/bos/eos = 0/1/2); ChatGLM3's
9 special tokens follow the pieces ([MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|>
<|observation|>), and the vocabulary is exactly pieces + 9. `--shape 6b` gives ChatGLM3-6B's real
shapes (3.5 GB in q4_0, for bench/cpu_backends.py) with the same small tokenizer's ids padded to
65024 rows. Needs numpy, sentencepiece and gguf; no torch, no download, deterministic.
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

SPECIAL = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
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
    past the tokenizer's ids (6b's padding) and, for 6b, of eos/<|user|>/<|observation|> are zero:
    greedy decoding never picks them, so a benchmark decodes as many tokens as it asks.
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
    if shape.vocab > shape.used:
        output[[2, shape.used - 3, shape.used - 1]] = 0  # eos, <|user|>, <|observation|>
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


GGUF_NAMES = {
    "transformer.embedding.word_embeddings.weight": "token_embd.weight",
    "transformer.encoder.final_layernorm.weight": "output_norm.weight",
    "transformer.output_layer.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attention.query_key_value.weight": "attn_qkv.weight",
    "self_attention.query_key_value.bias": "attn_qkv.bias",
    "self_attention.dense.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.dense_h_to_4h.weight": "ffn_up.weight",
    "mlp.dense_4h_to_h.weight": "ffn_down.weight",
}


def gguf_name(name: str) -> str:
    """HF name -> llama.cpp's (what convert_hf_to_gguf.py's tensor map gives for ChatGLMModel)."""
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, _, index, rest = name.split(".", 4)  # transformer.encoder.layers.N.rest
    return f"blk.{index}.{GGUF_NAMES[rest]}"


def vocabulary(sp_model: bytes, size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types as convert_hf_to_gguf.py's set_vocab_chatglm3 writes them."""
    import sentencepiece as spm
    from gguf import TokenType

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    tokens, scores, types = [], [], []
    for token_id in range(size):
        if token_id < sp.get_piece_size():
            piece = {0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(token_id, sp.id_to_piece(token_id))
            kind = TokenType.NORMAL
            if sp.is_unknown(token_id):
                kind = TokenType.UNKNOWN
            elif sp.is_control(token_id):
                kind = TokenType.CONTROL
            elif sp.is_byte(token_id):
                kind = TokenType.BYTE
            tokens.append(piece.encode())
            scores.append(sp.get_score(token_id))
        else:
            offset = token_id - sp.get_piece_size()
            if offset < len(SPECIAL):
                tokens.append(SPECIAL[offset].encode())
                kind = TokenType.CONTROL
            else:
                tokens.append(f"[PAD{token_id}]".encode())
                kind = TokenType.UNUSED
            scores.append(0.0)
        types.append(int(kind))
    return tokens, scores, types


def write_gguf(path: Path, shape: Shape, sp_model: bytes, dtype: str, seed: int) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "chatglm")
    writer.add_name("ChatGLM3 random weights (glmops test model)")
    writer.add_context_length(shape.seq_length)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_block_count(shape.layers)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_groups)
    writer.add_layer_norm_rms_eps(shape.eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if dtype == "q4_0" else gguf.LlamaFileType.ALL_F32)
    writer.add_rope_dimension_count(shape.head_dim // 2)
    writer.add_rope_freq_base(10000.0)
    writer.add_add_bos_token(False)
    tokens, scores, types = vocabulary(sp_model, shape.vocab)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("chatglm-spm")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(True)
    writer.add_remove_extra_whitespaces(False)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    quant = gguf.GGMLQuantizationType
    # headers first (name, shape, type), then the data tensor by tensor: a 6b model never sits in memory whole
    direct = dtype == "q4_0" and shape.vocab > shape.used
    for name, _, array in tensors(shape, seed, direct):
        data, kind = stored(name, array, dtype)
        writer.add_tensor_info(gguf_name(name), data.shape, data.dtype, data.nbytes,
                               raw_dtype=quant.Q4_0 if kind == GGML_TYPES["q4_0"] else quant.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, _, array in tensors(shape, seed, direct):
        writer.write_tensor_data(stored(name, array, dtype)[0])
    writer.close()


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


def make(out: Path, shape_name: str = "tiny", dtype: str = "q4_0", seed: int = 0) -> dict[str, Path]:
    """Write the three files (skipped when they exist); returns their paths."""
    shape = SHAPES[shape_name]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"gguf": out / f"chatglm3-{shape_name}.gguf", "ggml": out / f"chatglm3-{shape_name}-ggml.bin", "tokenizer": out / "tokenizer.model"}
    if all(path.exists() for path in paths.values()):
        return paths
    sp_model = train_tokenizer()
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    used = pieces + len(SPECIAL)
    shape = Shape(**{**shape.__dict__, "vocab": shape.vocab or used, "used": used})
    paths["tokenizer"].write_bytes(sp_model)
    write_gguf(paths["gguf"], shape, sp_model, dtype, seed)
    write_ggml(paths["ggml"], shape, sp_model, dtype, seed)
    return paths


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", choices=sorted(GGML_TYPES), default="q4_0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in make(args.out, args.shape, args.dtype, args.seed).values():
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
