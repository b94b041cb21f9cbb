#!/usr/bin/env python3
"""Make, offline, a tiny chat model and a tiny embedding model for tests and the local demo.

    python scripts/make_tiny_models.py OUT_DIR     ->  OUT_DIR/tiny-chatglm3  OUT_DIR/tiny-bge

The chat model is a small random-weight causal LM (Llama architecture, ~0.5 MB) with a byte-level
BPE tokenizer that carries ChatGLM3's special tokens ([gMASK] sop <|system|> <|user|>
<|assistant|> <|observation|>), so the server builds the same prompt as for the real checkpoint.
The embedding model is a small random BERT with a WordPiece tokenizer, pooled like bge (CLS +
L2 norm). Deterministic (fixed seeds); nothing is downloaded. Never commit the output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CORPUS = [
    "你好，给我讲一个故事，大概100字",
    "从前有一座山，山里有一座庙，庙里有一个老和尚在给小和尚讲故事。",
    "You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's instructions carefully.",
    "Respond using markdown. The weather in Beijing is sunny today.",
    "北京今天天气晴朗，气温二十五度。上海有小雨。",
    "Answer the following questions as best as you can. You have access to the following tools:",
    "get_weather tool_call(city=\"北京\") ```python``` observation result",
    "def hello(): print('hello world') 1 2 3 4 5 6 7 8 9 0 , . ! ? : ; ( ) [ ] { } \" '",
    "ChatGLM3-6B 是一个开源的对话模型，可以部署在 AutoDL 的 RTX 3090 上。",
    "The quick brown fox jumps over the lazy dog. 我爱自然语言处理。",
]
CHAT_SPECIAL = ["<pad>", "</s>", "<unk>", "[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def make_chat_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=CHAT_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=CHAT_SPECIAL[3:], model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(out)
    _fix_tokenizer_config(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.5, tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(out, safe_serialization=True)


def make_embedding_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(CORPUS * 3, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special, show_progress=False))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                             special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(out)
    _fix_tokenizer_config(out)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(out, safe_serialization=True)


def _fix_tokenizer_config(out: Path) -> None:
    """Make the tokenizer loadable by transformers 4.x and 5.x alike (see RECIPES: tiny models)."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2))


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    root = Path(argv[1])
    chat, embed = root / "tiny-chatglm3", root / "tiny-bge"
    if not (chat / "config.json").exists():
        chat.mkdir(parents=True, exist_ok=True)
        make_chat_model(chat)
    if not (embed / "config.json").exists():
        embed.mkdir(parents=True, exist_ok=True)
        make_embedding_model(embed)
    for path in (chat, embed):
        for file in path.iterdir():
            file.chmod(0o644)  # safetensors writes 0600
    print(f"{chat}\n{embed}")


if __name__ == "__main__":
    main(sys.argv)
