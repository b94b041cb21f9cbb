"""Embeddings with plain transformers: CLS pooling and L2 normalisation, as bge models expect."""

from __future__ import annotations

import threading
from typing import Any

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
                from glmops.server.backends.base import BackendError

                raise BackendError(f"input[{index}] has token id {bad}; the embedding model's vocabulary has ids 0..{size - 1}")
        batches = []
        for start in range(0, len(inputs), self.batch_size):
            encoded = [self.tokenizer.prepare_for_model(ids, add_special_tokens=True, truncation=True, max_length=MAX_LENGTH)
                       for ids in inputs[start : start + self.batch_size]]
            batches.append(self.tokenizer.pad(encoded, padding=True, return_tensors="pt"))
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
