"""Run a ChatGLM3 checkpoint's own code directly, without glmops: the reference the server is compared with.

    PINS_PYTHON tests/server/chatglm_direct.py CHECKPOINT < request.json > answer.json

Runs under .venv-pins (transformers 4.40.x, which ChatGLM3's remote code needs). Imports nothing of glmops.
Requests (a JSON object with "op"):
- generate: for each case {history, query, role, prefix, max_new_tokens, stops}, the prompt ids from the
  checkpoint tokenizer's own build_chat_input (plus the SentencePiece ids of `prefix`), then greedy
  `model.generate()`; stops "chatglm" = eos, <|user|>, <|observation|> (as ChatGLM3's chat() does), "eos" = eos only.
  Answers {prompt_ids, generated (up to the stop token), stop (its id or null), text (decoded)}.
- quantize: what the checkpoint's own quantization.py does on this (CPU) machine, step by step.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer


def generate(model: Any, tokenizer: Any, case: dict[str, Any]) -> dict[str, Any]:
    ids = tokenizer.build_chat_input(case["query"], history=case.get("history", []), role=case.get("role", "user"))["input_ids"]
    if case.get("prefix"):
        ids = torch.cat([ids, torch.tensor([tokenizer.tokenizer.encode(case["prefix"])], dtype=ids.dtype)], dim=1)
    stops = [tokenizer.eos_token_id]
    if case.get("stops", "chatglm") == "chatglm":
        stops += [tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=case["max_new_tokens"],
                             do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    stop = next((i for i, token in enumerate(new) if token in stops), None)
    generated = new if stop is None else new[:stop]
    return {"prompt_ids": ids[0].tolist(), "generated": generated, "stop": None if stop is None else new[stop],
            "text": tokenizer.decode(generated, skip_special_tokens=True)}


def attempt(call: Any) -> str:
    """'ok', or the error a step of the real code raises here."""
    try:
        call()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported
        return f"{type(exc).__name__}: {exc}"


def quantize_facts(model: Any, folder: str) -> dict[str, Any]:
    """Run the checkpoint's quantization.py (the copy of ChatGLM's own) on the CPU, step by step."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    linear = get_class_from_dynamic_module("quantization.QuantizedLinear", folder)
    code = sys.modules[linear.__module__]
    weight = model.transformer.encoder.layers[0].mlp.dense_4h_to_h.weight.detach().clone()
    int8 = linear(weight_bit_width=8, weight=weight, device="cpu")
    restored = int8.weight.float() * int8.weight_scale[:, None]
    return {
        "kernels_loaded": code.kernels is not None,
        "int8_weight_dtype": str(int8.weight.dtype),
        "int8_max_error_over_scale": float(((restored - weight).abs().max(dim=-1).values / int8.weight_scale).max()),
        "int8_forward_float32": attempt(lambda: int8(torch.ones(1, weight.shape[1]))),
        "int8_forward_bfloat16": attempt(lambda: linear(weight_bit_width=8, weight=weight.bfloat16(), device="cpu")(
            torch.ones(1, weight.shape[1], dtype=torch.bfloat16))),
        "int4_compress": attempt(lambda: linear(weight_bit_width=4, weight=weight, device="cpu")),
        "model_quantize_8": attempt(lambda: model.quantize(8)),
    }


def main() -> None:
    folder = sys.argv[1]
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).float().eval()
    if request["op"] == "generate":
        answer: Any = [generate(model, tokenizer, case) for case in request["cases"]]
    else:
        answer = quantize_facts(model, folder)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
