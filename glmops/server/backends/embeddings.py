"""Embeddings with plain transformers: CLS pooling and L2 normalisation, as bge models expect."""

from __future__ import annotations

import threading
from typing import Any

from glmops.server.backends.errors import BackendError

MAX_LENGTH = 512  # bge's window; longer inputs are truncated


class EmbeddingModel:
    def __init__(self, path: str, device: Any, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Texts -> normalised vectors and the tokens used."""
        batches = [self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                   for start in range(0, len(texts), self.batch_size)]
        return self._run(batches)

    def embed_ids(self, inputs: list[list[int]]) -> tuple[list[list[float]], int]:
        """Token ids of this model's own tokenizer (without [CLS]/[SEP]; they are added) -> vectors."""
        size = len(self.tokenizer)
        for index, ids in enumerate(inputs):
            bad = next((i for i in ids if not 0 <= i < size), None)
            if bad is not None:
                raise BackendError(f"input[{index}] has token id {bad}; the embedding model's vocabulary has ids 0..{size - 1}")
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if cls is not None and sep is not None:  # BERT's [CLS] A [SEP], XLM-R's <s> A </s>: bge's families
            rows = [[cls] + ids[: MAX_LENGTH - 2] + [sep] for ids in inputs]
        else:
            rows = [self.tokenizer.build_inputs_with_special_tokens(ids[: MAX_LENGTH - 2]) for ids in inputs]
        pad = self.tokenizer.pad_token_id or 0
        batches = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(len(row) for row in chunk)
            batches.append({
                "input_ids": self.torch.tensor([row + [pad] * (width - len(row)) for row in chunk]),
                "attention_mask": self.torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk]),
            })
        return self._run(batches)

    def _run(self, batches: list[Any]) -> tuple[list[list[float]], int]:
        vectors: list[list[float]] = []
        tokens = 0
        with self.lock, self.torch.inference_mode():
            for batch in batches:
                tokens += int(batch["attention_mask"].sum())
                batch = {k: v.to(self.device) for k, v in batch.items()}
                output = self.model(**batch)
                cls = output.last_hidden_state[:, 0]
                cls = self.torch.nn.functional.normalize(cls.float(), p=2, dim=1)
                vectors.extend(cls.cpu().tolist())
        return vectors, tokens
