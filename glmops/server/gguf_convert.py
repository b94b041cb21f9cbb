"""Convert a ChatGLM3 checkpoint (the ModelScope / Hugging Face folder) to a GGUF file for llama.cpp.

    python -m glmops.server.gguf_convert MODEL_DIR OUT.gguf [--type q4_0] [--threads N]

Reads config.json, tokenizer.model and the weights (`*.safetensors`, else `pytorch_model*.bin`) one
tensor at a time and writes what llama.cpp's convert_hf_to_gguf.py writes for THUDM/chatglm3-6b
(architecture `chatglm`, ChatGLM3's sentencepiece vocabulary with its 9 special tokens), without that
script's catch (it takes ChatGLM3's tokenizer only when config.json's `_name_or_path` names
THUDM/chatglm3-6b) and without a llama.cpp checkout. f32 and f16 are written directly; every other
type is quantized from f16 by llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`).
The result appears under its name only when whole (written to OUT.gguf.tmp, then renamed).
Runs on the target, in the deployment's venv (numpy, gguf, sentencepiece, safetensors; torch only
for `.bin` weights); the llama_cpp role calls it once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmops.server.backends.ggml_files import CHATGLM3_SPECIAL

# --type -> llama.cpp's file type (LLAMA_FTYPE_*): f32/f16 are written here, the rest quantized from f16
TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q6_k": "MOSTLY_Q6_K", "q5_k_m": "MOSTLY_Q5_K_M",
         "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1", "q4_k_m": "MOSTLY_Q4_K_M", "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1"}
# HF (ChatGLM3) tensor names -> llama.cpp's, per layer after "transformer.encoder.layers.N."
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
SKIPPED = ("transformer.rotary_pos_emb.inv_freq",)  # recomputed by llama.cpp from the rope metadata
LAYER_PREFIX = "transformer.encoder.layers."


class ConvertError(Exception):
    """The checkpoint cannot be converted; the message says which file and why."""


@dataclass
class ChatGLM3Config:
    """The hyperparameters the GGUF file carries (config.json's names in comments)."""

    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_groups: int  # multi_query_group_num (heads when multi_query_attention is off)
    layers: int  # num_layers
    ffn: int  # ffn_hidden_size
    seq_length: int  # seq_length
    vocab: int  # padded_vocab_size
    eps: float = 1e-5  # layernorm_epsilon
    rope_base: float = 10000.0  # 10000 * rope_ratio (chatglm3-6b-32k: rope_ratio 50)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def read(cls, model_dir: Path) -> ChatGLM3Config:
        """config.json of a ChatGLM3 checkpoint; a ConvertError names what is wrong."""
        path = model_dir / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConvertError(f"{path} does not exist: MODEL_DIR must be a ChatGLM3 checkpoint folder (config.json, tokenizer.model, weights)") from None
        except (OSError, ValueError) as exc:
            raise ConvertError(f"{path} is not readable JSON: {exc}") from None
        if config.get("model_type") != "chatglm":
            raise ConvertError(f"{path}: model_type is {config.get('model_type')!r}, not 'chatglm': only ChatGLM3 checkpoints are converted here")
        missing = [key for key in ("hidden_size", "num_attention_heads", "num_layers", "ffn_hidden_size", "padded_vocab_size") if key not in config]
        if missing:
            raise ConvertError(f"{path} lacks {', '.join(missing)}: it is not a ChatGLM3 config.json")
        heads = int(config["num_attention_heads"])
        return cls(hidden=int(config["hidden_size"]), heads=heads,
                   kv_groups=int(config.get("multi_query_group_num", heads)) if config.get("multi_query_attention") else heads,
                   layers=int(config["num_layers"]), ffn=int(config["ffn_hidden_size"]), seq_length=int(config.get("seq_length", 8192)),
                   vocab=int(config["padded_vocab_size"]), eps=float(config.get("layernorm_epsilon", 1e-5)),
                   rope_base=10000.0 * float(config.get("rope_ratio", 1.0)))


@dataclass
class TensorSpec:
    """One tensor of the GGUF file: its name, the stored array's shape and numpy dtype, its GGML type, its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the stored array ("uint8" for quantized bytes)
    ggml_type: str  # gguf.GGMLQuantizationType member name: F32, F16, Q4_0...
    load: Callable[[], Any]


def gguf_name(name: str) -> str | None:
    """llama.cpp's name for an HF ChatGLM3 tensor; None for one it does not take. A ConvertError for an unknown one."""
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    if name in SKIPPED:
        return None
    if name.startswith(LAYER_PREFIX):
        index, _, rest = name[len(LAYER_PREFIX):].partition(".")
        if index.isdigit() and rest in GGUF_NAMES:
            return f"blk.{index}.{GGUF_NAMES[rest]}"
    raise ConvertError(f"tensor {name} is not a ChatGLM3 tensor (is this a ChatGLM3-6B checkpoint?)")


def vocabulary(sp_model: bytes, size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types of ChatGLM3's vocabulary: the sentencepiece pieces (unk/bos/eos spelled
    <unk> <bos> <eos>), ChatGLM3's 9 special tokens right after them, then [PADn] up to `size`."""
    import sentencepiece as spm
    from gguf import TokenType

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    pieces = sp.get_piece_size()
    if pieces + len(CHATGLM3_SPECIAL) > size:
        raise ConvertError(f"the tokenizer has {pieces} pieces + {len(CHATGLM3_SPECIAL)} special tokens, more than padded_vocab_size {size}")
    tokens, scores, types = [], [], []
    for token_id in range(size):
        if token_id < pieces:
            tokens.append({0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(token_id, sp.id_to_piece(token_id)).encode())
            scores.append(sp.get_score(token_id))
            kind = (TokenType.UNKNOWN if sp.is_unknown(token_id) else TokenType.CONTROL if sp.is_control(token_id)
                    else TokenType.BYTE if sp.is_byte(token_id) else TokenType.NORMAL)
        elif token_id - pieces < len(CHATGLM3_SPECIAL):
            tokens.append(CHATGLM3_SPECIAL[token_id - pieces].encode())
            scores.append(0.0)
            kind = TokenType.CONTROL
        else:
            tokens.append(f"[PAD{token_id}]".encode())
            scores.append(0.0)
            kind = TokenType.UNUSED
        types.append(int(kind))
    return tokens, scores, types


def write_gguf(path: Path, config: ChatGLM3Config, sp_model: bytes, tensors: list[TensorSpec], file_type: str, title: str,
               progress: Callable[[str], None] | None = None) -> None:
    """A GGUF file of architecture `chatglm`: the metadata, the vocabulary, then each tensor's data as it is
    loaded (headers first, so the whole model never sits in memory)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "chatglm")
    writer.add_name(title)
    writer.add_context_length(config.seq_length)
    writer.add_embedding_length(config.hidden)
    writer.add_feed_forward_length(config.ffn)
    writer.add_block_count(config.layers)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_groups)
    writer.add_layer_norm_rms_eps(config.eps)
    writer.add_file_type(getattr(gguf.LlamaFileType, file_type))
    writer.add_rope_dimension_count(config.head_dim // 2)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_add_bos_token(False)
    tokens, scores, types = vocabulary(sp_model, config.vocab)
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
    import numpy as np

    for spec in tensors:
        nbytes = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
        writer.add_tensor_info(spec.name, spec.shape, np.dtype(spec.dtype), nbytes, raw_dtype=getattr(gguf.GGMLQuantizationType, spec.ggml_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for number, spec in enumerate(tensors, 1):
        data = spec.load()
        if tuple(data.shape) != spec.shape or data.dtype.name != spec.dtype:
            raise ConvertError(f"tensor {spec.name}: read {data.dtype.name}{list(data.shape)}, expected {spec.dtype}{list(spec.shape)}")
        writer.write_tensor_data(data)
        if progress:
            progress(f"[{number}/{len(tensors)}] {spec.name} {spec.ggml_type} {list(spec.shape)}")
    writer.close()


class Checkpoint:
    """The weights of a checkpoint folder, tensor by tensor: `*.safetensors`, else `pytorch_model*.bin`."""

    def __init__(self, model_dir: Path):
        self.files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
        if not self.files:
            raise ConvertError(f"{model_dir} has no weights (*.safetensors or pytorch_model*.bin): is the download complete?")
        self.shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
        for file in self.files:
            for name, shape in self._shapes(file):
                self.shapes[name] = (shape, file)

    def _shapes(self, file: Path) -> Iterator[tuple[str, tuple[int, ...]]]:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="numpy") as handle:
                    for name in handle.keys():
                        yield name, tuple(handle.get_slice(name).get_shape())
            except Exception as exc:  # safetensors raises its own SafetensorError
                raise ConvertError(f"{file} is not a readable safetensors file ({exc}): fetch the model again") from None
        else:
            for name, tensor in self._torch_file(file).items():
                yield name, tuple(tensor.shape)

    def _torch_file(self, file: Path) -> dict[str, Any]:
        try:
            import torch
        except ImportError:
            raise ConvertError(f"{file} is a PyTorch file: reading it needs torch (pip install torch==2.13.0)") from None
        try:
            return torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many kinds for a damaged file
            raise ConvertError(f"{file} is not a readable PyTorch checkpoint ({exc}): fetch the model again") from None

    def array(self, name: str) -> Any:
        """The tensor as a numpy float32 array."""
        import numpy as np

        file = self.shapes[name][1]
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="numpy") as handle:
                    return handle.get_tensor(name).astype(np.float32)
            except TypeError:  # bfloat16 has no numpy dtype: read it through torch
                with safe_open(str(file), framework="pt") as handle:
                    return handle.get_tensor(name).float().numpy()
        return self._torch_file(file)[name].float().numpy()


def checkpoint_tensors(checkpoint: Checkpoint, config: ChatGLM3Config, float_type: str) -> list[TensorSpec]:
    """The GGUF tensors of a checkpoint: matrices in `float_type` (F32 or F16), norms and biases in F32,
    each checked against the shape config.json implies."""
    from glmops.server.backends.ggml_files import gguf_expected_shapes

    expected = gguf_expected_shapes(config.hidden, config.heads, config.kv_groups, config.ffn, config.layers, config.vocab)
    specs = []
    for name, (shape, file) in checkpoint.shapes.items():
        target = gguf_name(name)
        if target is None:
            continue
        if list(reversed(shape)) != expected.get(target):
            raise ConvertError(f"{file}: tensor {name} has shape {list(shape)}, expected {list(reversed(expected[target]))} from config.json")
        kind = float_type if len(shape) == 2 else "F32"
        dtype = "float16" if kind == "F16" else "float32"
        specs.append(TensorSpec(target, shape, dtype, kind, lambda name=name, dtype=dtype: checkpoint.array(name).astype(dtype)))
    absent = sorted(set(expected) - {spec.name for spec in specs} - {"output.weight"})
    if absent:
        raise ConvertError(f"the checkpoint lacks {absent[0]} ({len(absent)} tensors missing): is the download complete?")
    return specs


def quantize(source: Path, dest: Path, kind: str, threads: int) -> None:
    """llama.cpp's quantizer (llama-cpp-python): `source` (f16 GGUF) -> `dest` in `kind`."""
    import ctypes

    try:
        import llama_cpp
    except ImportError:
        raise ConvertError(f"--type {kind} is quantized by llama.cpp: install llama-cpp-python==0.3.36 (or use --type f16)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{TYPES[kind]}")
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)) != 0:
        raise ConvertError(f"llama.cpp could not quantize {source} to {kind} (its messages are above)")


def convert(model_dir: Path, out: Path, kind: str = "q4_0", threads: int = 0, progress: Callable[[str], None] = print) -> Path:
    """Convert the ChatGLM3 checkpoint in `model_dir` to `out` (GGUF, type `kind`); returns `out`."""
    if kind not in TYPES:
        raise ConvertError(f"unknown --type {kind!r}: choose one of {', '.join(TYPES)}")
    config = ChatGLM3Config.read(model_dir)
    tokenizer = model_dir / "tokenizer.model"
    if not tokenizer.is_file():
        raise ConvertError(f"{tokenizer} does not exist: ChatGLM3's sentencepiece tokenizer is needed")
    checkpoint = Checkpoint(model_dir)
    float_type = "F32" if kind == "f32" else "F16"
    specs = checkpoint_tensors(checkpoint, config, float_type)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    floats = out.with_name(out.name + ".f16.tmp") if kind not in ("f32", "f16") else partial
    started = time.monotonic()
    try:
        write_gguf(floats, config, tokenizer.read_bytes(), specs, TYPES["f32" if kind == "f32" else "f16"], model_dir.name, progress)
        if floats != partial:
            progress(f"quantizing to {kind} with llama.cpp")
            quantize(floats, partial, kind, threads or os.cpu_count() or 1)
        os.replace(partial, out)
    finally:
        for leftover in {partial, floats}:
            leftover.unlink(missing_ok=True)
    progress(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {kind}) in {time.monotonic() - started:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glmops.server.gguf_convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="the ChatGLM3 checkpoint folder (config.json, tokenizer.model, weights)")
    parser.add_argument("out", type=Path, help="the GGUF file to write")
    parser.add_argument("--type", default="q4_0", choices=list(TYPES), help="the tensor type (default q4_0, about 3.5 GB for ChatGLM3-6B)")
    parser.add_argument("--threads", type=int, default=0, help="quantization threads (default: all cores)")
    args = parser.parse_args(argv)
    try:
        convert(args.model_dir, args.out, args.type, args.threads, lambda line: print(line, flush=True))
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
