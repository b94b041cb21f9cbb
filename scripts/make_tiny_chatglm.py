#!/usr/bin/env python3
"""Make, offline, a tiny checkpoint in ChatGLM3's own format, loaded through its own remote code.

    python scripts/make_tiny_chatglm.py OUT_DIR [--seed N] [--no-code]

OUT_DIR gets what THUDM/chatglm3-6b's folder has: config.json (model_type chatglm, auto_map to the remote
code), tokenizer_config.json (auto_map to ChatGLMTokenizer), tokenizer.model (sentencepiece, trained here),
model.safetensors (random float32 weights under ChatGLM3's tensor names, a few hundred KB) and the remote-code
files. The modeling, configuration, quantization and ChatGLM2 tokenizer code is copied from the installed
`modelscope` package (models/nlp/chatglm2: ChatGLM2 and ChatGLM3 share one architecture), its modelscope
imports rewritten; ChatGLM3's tokenizer layer and the import shim are glmops's own (scripts/chatglm3_code/,
see its README). `AutoModel.from_pretrained(OUT_DIR, trust_remote_code=True)` then runs that real code.
The weights and tokenizer are those of make_tiny_ggml.py's tiny shape (same seed, same bytes), so the CPU
engines' files made from this folder hold the same model. Deterministic; nothing is downloaded; never commit
the output. Needs numpy, sentencepiece, safetensors and (for the code) the modelscope package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from make_tiny_ggml import SHAPES, Shape, tensors, train_tokenizer  # scripts/ is on sys.path

from glmops.server.backends.ggml_files import CHATGLM3_SPECIAL

OWN_CODE = Path(__file__).resolve().parent / "chatglm3_code"
CODE_FILES = ("modeling_chatglm.py", "configuration_chatglm.py", "quantization.py", "tokenization_chatglm2.py",
              "tokenization_chatglm.py", "ms_shim.py")
# modelscope file -> (file in the checkpoint, [(line as modelscope has it, line in the checkpoint)])
LOGGER = ("from modelscope.utils import logger as logging", "from .ms_shim import logging")
COPIED = {
    "text_generation.py": ("modeling_chatglm.py", [
        ("from modelscope import Model, TorchModel", "from .ms_shim import Model, TorchModel"),
        ("from modelscope.metainfo import Models", "from .ms_shim import Models"),
        ("from modelscope.outputs import OutputKeys", "from .ms_shim import OutputKeys"),
        LOGGER,
        ("from modelscope.utils.constant import Tasks", "from .ms_shim import Tasks"),
        ("from ... import MODELS", "from .ms_shim import MODELS"),
        ("from .configuration import ChatGLM2Config", "from .configuration_chatglm import ChatGLM2Config"),
    ]),
    "configuration.py": ("configuration_chatglm.py", [LOGGER]),
    "quantization.py": ("quantization.py", [LOGGER]),
    "tokenization.py": ("tokenization_chatglm2.py", []),
}


class MakeError(Exception):
    """What stops the checkpoint from being made, in words."""


def modelscope_chatglm2() -> Path:
    """The installed modelscope package's ChatGLM2 code folder (found without importing modelscope)."""
    spec = importlib.util.find_spec("modelscope")
    if spec is None or not spec.submodule_search_locations:
        raise MakeError("the modelscope package is not installed: pip install modelscope (its ChatGLM2 code is copied)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "nlp" / "chatglm2"
    if not folder.is_dir():
        raise MakeError(f"{folder} does not exist: this modelscope version does not ship ChatGLM2's code")
    return folder


def write_code(out: Path) -> None:
    """The remote-code files: modelscope's copied with their imports rewritten, and glmops's own two."""
    source = modelscope_chatglm2()
    for name, (target, rewrites) in COPIED.items():
        text = (source / name).read_text(encoding="utf-8")
        for old, new in rewrites:
            if old not in text.splitlines():
                raise MakeError(f"{source / name} has no line {old!r}: this modelscope version changed its imports")
            text = text.replace(old + "\n", new + "\n", 1)
        leftover = [line for line in text.splitlines() if line.startswith(("from modelscope", "import modelscope"))]
        if leftover:
            raise MakeError(f"{source / name} imports modelscope in a way not rewritten: {leftover[0]!r}")
        (out / target).write_text(text, encoding="utf-8")
    for name in ("tokenization_chatglm.py", "ms_shim.py"):
        shutil.copyfile(OWN_CODE / name, out / name)


def config_json(shape: Shape) -> dict:
    """ChatGLM3-6B's config.json with the tiny shape (the keys its remote code reads)."""
    return {
        "_name_or_path": "glmops/tiny-chatglm3", "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLM2Config",
            "AutoModel": "modeling_chatglm.ChatGLM2ForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLM2ForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLM2ForConditionalGeneration",
        },
        "add_bias_linear": False, "add_qkv_bias": True, "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0, "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True, "ffn_hidden_size": shape.ffn, "fp32_residual_connection": False, "hidden_dropout": 0.0,
        "hidden_size": shape.hidden, "kv_channels": shape.head_dim, "layernorm_epsilon": shape.eps,
        "multi_query_attention": True, "multi_query_group_num": shape.kv_groups, "num_attention_heads": shape.heads,
        "num_layers": shape.layers, "original_rope": True, "padded_vocab_size": shape.vocab, "post_layer_norm": True,
        "rmsnorm": True, "seq_length": shape.seq_length, "use_cache": True, "torch_dtype": "float32",
        "transformers_version": "4.40.2", "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0,
    }


TOKENIZER_CONFIG = {
    "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    "tokenizer_class": "ChatGLMTokenizer", "padding_side": "left", "remove_space": False, "do_lower_case": False,
    "clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
}


def rotary_inv_freq(shape: Shape):  # noqa: ANN201 - numpy array
    """The buffer ChatGLM3's checkpoint stores: RotaryEmbedding(kv_channels // 2) -> 1 / 10000^(2i/dim)."""
    import numpy as np

    dim = shape.head_dim // 2
    return (1.0 / (10000 ** (np.arange(0, dim, 2, dtype=np.float32) / dim))).astype(np.float32)


def make(out: Path, seed: int = 0, code: bool = True) -> Path:
    """Write the checkpoint folder (skipped when its config.json exists); returns it."""
    import sentencepiece as spm
    from safetensors.numpy import save_file

    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if code:
        write_code(out)
    sp_model = train_tokenizer()
    used = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size() + len(CHATGLM3_SPECIAL)
    shape = Shape(**{**SHAPES["tiny"].__dict__, "vocab": used, "used": used})
    (out / "tokenizer.model").write_bytes(sp_model)
    weights = {name: array for name, _, array in tensors(shape, seed)}
    weights["transformer.rotary_pos_emb.inv_freq"] = rotary_inv_freq(shape)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (out / "config.json").write_text(json.dumps(config_json(shape), indent=2))  # last: it marks the folder complete
    for file in out.iterdir():
        file.chmod(0o644)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-code", action="store_true", help="weights, tokenizer and configs only (a checkpoint whose remote code is missing)")
    args = parser.parse_args(argv)
    try:
        print(make(args.out, args.seed, not args.no_code))
    except MakeError as exc:
        sys.exit(f"make_tiny_chatglm: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
